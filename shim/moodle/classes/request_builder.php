<?php
// This file is part of local_mih, the Moodle side of mih (Moodle integration hub).
//
// local_mih is free software: you can redistribute it and/or modify it under the terms of
// the GNU General Public License as published by the Free Software Foundation, either
// version 3 of the License, or (at your option) any later version.
//
// local_mih is distributed in the hope that it will be useful, but WITHOUT ANY WARRANTY;
// without even the implied warranty of MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.
// See the GNU General Public License for more details: <https://www.gnu.org/licenses/>.

namespace local_mih;

/**
 * The fluent way to call a service: hub::send('crm')->to('/users')->with($data)->dispatch().
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class request_builder {
    /** @var string path (REST), operation (SOAP) or routing key (AMQP) */
    private string $path = '/';
    /** @var array the payload */
    private array $data = [];
    /** @var string HTTP method */
    private string $method = 'POST';
    /** @var array options of hub::request() */
    private array $options = [];

    /**
     * Starts a call to a service.
     *
     * @param string $service the service's name in the hub
     */
    public function __construct(private readonly string $service) {
    }

    /**
     * Where to send it.
     *
     * @param string $path
     * @return self
     */
    public function to(string $path): self {
        $this->path = $path;
        return $this;
    }

    /**
     * The payload (replaces any earlier one).
     *
     * @param array $data
     * @return self
     */
    public function with(array $data): self {
        $this->data = $data;
        return $this;
    }

    /**
     * The HTTP method.
     *
     * @param string $method
     * @return self
     */
    public function method(string $method): self {
        $this->method = strtoupper($method);
        return $this;
    }

    /**
     * Options of {@see hub::request()}: query, headers, timeout.
     *
     * @param array $options
     * @return self
     */
    public function options(array $options): self {
        $this->options = $options + $this->options;
        return $this;
    }

    /**
     * Makes the call.
     *
     * @return response
     * @throws \moodle_exception service_not_found, service_disabled, circuit_open
     */
    public function dispatch(): response {
        return hub::instance()->execute_request($this->service, $this->path, $this->data, $this->method, $this->options);
    }
}

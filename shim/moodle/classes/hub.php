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
 * The facade: other plugins call registered services through the hub, which applies the
 * service's authentication, retries, circuit breaker and logging, and answers in one shape.
 *
 *     $response = \local_mih\hub::request('crm', '/users', ['id' => 7]);
 *     $response = \local_mih\hub::send('crm')->to('/users/7')->method('PUT')->with($data)->dispatch();
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class hub {
    /** Seconds a call may take when the caller does not say (the hub caps it too). */
    public const DEFAULT_TIMEOUT = 30;

    /** @var self|null */
    private static ?self $instance = null;

    /**
     * A facade over the given HTTP client.
     *
     * @param http_client $http
     */
    public function __construct(private readonly http_client $http = new http_client()) {
    }

    /**
     * The shared instance (as the original plugin's mih::instance()).
     *
     * @return self
     */
    public static function instance(): self {
        return self::$instance ??= new self();
    }

    /**
     * Calls a service now.
     *
     * @param string $service the service's name in the hub
     * @param string $path joined to a REST service's base URL; a SOAP operation; an AMQP routing key
     * @param array $payload sent as JSON (nothing for a GET or DELETE with an empty payload)
     * @param string $method GET, POST, PUT, PATCH or DELETE
     * @param array $options query (array), headers (array), timeout (seconds)
     * @return response
     * @throws \moodle_exception service_not_found, service_disabled, circuit_open
     */
    public static function request(string $service, string $path = '/', array $payload = [], string $method = 'POST',
            array $options = []): response {
        return self::instance()->execute_request($service, $path, $payload, $method, $options);
    }

    /**
     * Starts a fluent call.
     *
     * @param string $service
     * @return request_builder
     */
    public static function send(string $service): request_builder {
        return new request_builder($service);
    }

    /**
     * Makes a call through the hub's facade endpoint.
     *
     * @param string $service
     * @param string $path
     * @param array $payload
     * @param string $method empty means POST
     * @param array $options
     * @return response
     * @throws \moodle_exception service_not_found, service_disabled, circuit_open
     */
    public function execute_request(string $service, string $path = '/', array $payload = [], string $method = '',
            array $options = []): response {
        $config = config::load();
        if ($config->apiurl === '' || $config->apitoken === '') {
            return self::failure(get_string('facade_not_configured', 'local_mih'));
        }
        $method = strtoupper($method ?: 'POST');
        $timeout = max(1, (int) ($options['timeout'] ?? self::DEFAULT_TIMEOUT));
        $call = ['method' => $method, 'path' => $path, 'timeout_ms' => $timeout * 1000];
        if ($payload !== [] || !in_array($method, ['GET', 'DELETE', 'HEAD'], true)) {
            $call['body'] = $payload;
        }
        foreach (['query', 'headers'] as $name) {
            if (!empty($options[$name]) && is_array($options[$name])) {
                $call[$name] = array_map('strval', $options[$name]);
            }
        }
        $url = $config->apiurl . '/api/v1/services/' . rawurlencode($service) . '/request';
        $body = json_encode($call, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE | JSON_PRESERVE_ZERO_FRACTION);
        if ($body === false) {
            return self::failure('the payload cannot be encoded as JSON: ' . json_last_error_msg());
        }
        $headers = ['Content-Type: application/json', 'Accept: application/json', 'Authorization: Bearer ' . $config->apitoken];
        // The hub waits for the call's whole deadline plus a margin for a dispatcher's answer.
        $answer = $this->http->post($url, $body, $headers, $timeout + 5);
        return self::interpret($service, $answer, $config);
    }

    /**
     * Turns the hub's answer into a response, or into the exception the original plugin threw.
     *
     * @param string $service
     * @param http_answer $answer
     * @param config $config
     * @return response
     * @throws \moodle_exception
     */
    private static function interpret(string $service, http_answer $answer, config $config): response {
        $json = $answer->json();
        $status = $answer->status;
        if ($status === 0) {
            return self::failure(get_string('facade_unreachable', 'local_mih', (object) [
                'url' => $config->apiurl, 'error' => $answer->message()]));
        }
        if ($status === 404) {
            throw new \moodle_exception('service_not_found', 'local_mih', '', $service, $answer->message());
        }
        if ($status === 409) {
            throw new \moodle_exception('service_disabled', 'local_mih', '', $service, $answer->message());
        }
        if ($status === 503 && ($json['circuit'] ?? null) === 'open') {
            throw new \moodle_exception('circuit_open', 'local_mih', '', $service, (string) ($json['error'] ?? ''));
        }
        if (is_array($json) && array_key_exists('ok', $json) && array_key_exists('circuit', $json)) {
            // 200 (the target answered), 429 or 503 (nothing sent) or 504 (no answer in time).
            return new response(
                success: (bool) $json['ok'],
                httpstatus: isset($json['status']) ? (int) $json['status'] : null,
                body: isset($json['body']) ? (string) $json['body'] : null,
                error: $json['error'] ?? ($json['ok'] ? null : 'HTTP ' . ($json['status'] ?? $status)),
                latencyms: (int) ($json['duration_ms'] ?? 0),
                attempts: (int) ($json['attempts'] ?? 0),
                circuit: (string) $json['circuit'],
                callid: isset($json['call_id']) ? (string) $json['call_id'] : null,
                headers: is_array($json['headers'] ?? null) ? $json['headers'] : [],
            );
        }
        // The hub refused the request itself: a bad token (401/403) or a call it cannot make.
        return self::failure(get_string('facade_refused', 'local_mih', (object) [
            'status' => $status, 'message' => $answer->message()]));
    }

    /**
     * A response for a call that never reached a service.
     *
     * @param string $error
     * @return response
     */
    private static function failure(string $error): response {
        return new response(false, null, null, $error, 0, 0, 'unknown');
    }
}

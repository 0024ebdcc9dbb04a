<?php
// A stand-in for Moodle's \curl wrapper (lib/filelib.php), over PHP's curl extension: the
// methods local_mih calls, with Moodle's conventions (options named 'CURLOPT_…', headers set
// before the call, the response headers from getResponse(), errors in $error / get_errno()).

class curl {
    public $error = '';
    private array $headers = [];
    private array $info = [];
    private int $errno = 0;
    private array $response = [];

    public function __construct($settings = []) {
    }

    public function setHeader($header): void {
        foreach ((array) $header as $line) {
            $this->headers[] = $line;
        }
    }

    public function post($url, $params = '', $options = []) {
        return $this->request($url, [CURLOPT_POST => true, CURLOPT_POSTFIELDS => $params], $options);
    }

    public function get($url, $params = [], $options = []) {
        if ($params) {
            $url .= (str_contains($url, '?') ? '&' : '?') . http_build_query($params);
        }
        return $this->request($url, [CURLOPT_HTTPGET => true], $options);
    }

    public function get_info() {
        return $this->info;
    }

    public function get_errno() {
        return $this->errno;
    }

    public function getResponse() {
        return $this->response;
    }

    private function request(string $url, array $curlopts, array $options) {
        $handle = curl_init($url);
        $this->response = [];
        curl_setopt_array($handle, $curlopts + [
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_HTTPHEADER => $this->headers,
            CURLOPT_HEADERFUNCTION => function ($ch, $line) {
                if (str_contains($line, ':')) {
                    [$name, $value] = explode(':', $line, 2);
                    $this->response[trim($name)] = trim($value);
                }
                return strlen($line);
            },
        ]);
        foreach ($options as $name => $value) {
            $constant = strtoupper($name);
            if (!str_starts_with($constant, 'CURLOPT_')) {
                $constant = 'CURLOPT_' . $constant;
            }
            curl_setopt($handle, constant($constant), $value);
        }
        $body = curl_exec($handle);
        $this->info = curl_getinfo($handle);
        $this->errno = curl_errno($handle);
        $this->error = $this->errno ? curl_error($handle) : '';
        curl_close($handle);
        return $body === false ? false : $body;
    }
}

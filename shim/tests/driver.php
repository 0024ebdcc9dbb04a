<?php
// Drives local_mih on the stand-in, one step per run, as Moodle requests and cron would:
// every run is its own PHP process, so its end-of-request send runs as in Moodle.
//
//   php driver.php install                       create the plugin's tables from db/install.xml
//   php driver.php raise FILE [--no-send]        trigger every event of a JSON-lines file
//                                                (--no-send: skip the end-of-request send)
//   php driver.php raise-rollback FILE           trigger them inside a transaction that rolls back
//   php driver.php send [--wait] [--start-at=MS]  send the outbox now, as cli/flush.php (prints a JSON
//                                                report; --wait: respect the backoff)
//   php driver.php task [NAME]                   run a scheduled task (default send_outbox;
//                                                pull_inbound)
//   php driver.php cli SCRIPT [OPTIONS…]         run the plugin's cli/SCRIPT as an administrator
//                                                would (its output and exit status are the script's)
//   php driver.php status                        the outbox summary and parked rows as JSON
//   php driver.php retry-parked                  put parked rows back in line
//   php driver.php facade SERVICE PATH METHOD JSON   call a service through hub::request()
//   php driver.php fluent SERVICE PATH METHOD JSON   the same through hub::send()->…->dispatch()
//   php driver.php check                         the connection check as JSON

require(__DIR__ . '/standin/bootstrap.php');

$args = array_slice($argv, 1);
$command = array_shift($args) ?? '';
$flags = array_filter($args, static fn($a) => str_starts_with($a, '--'));
$args = array_values(array_diff($args, $flags));
$out = static function ($value): void {
    echo json_encode($value, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) . "\n";
};
$events = static function (string $file): array {
    $lines = file($file, FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES);
    if ($lines === false) {
        throw new RuntimeException("cannot read {$file}");
    }
    return array_map(static fn($line) => json_decode($line, true, 512, JSON_THROW_ON_ERROR), $lines);
};

/**
 * A Moodle-shaped directory for the plugin's cli/ scripts, which load ../../../config.php: its
 * config.php loads this stand-in. The scripts are copied there (PHP resolves symlinks, which
 * would lead them back to this repository), written whole so concurrent runs never see half.
 */
function standin_moodle_tree(): string {
    $root = sys_get_temp_dir() . '/mih-standin-moodle-' . substr(md5(STANDIN_PLUGIN), 0, 12);
    if (!is_dir("{$root}/local/mih/cli")) {
        mkdir("{$root}/local/mih/cli", 0777, true);
    }
    $write = static function (string $path, string $content): void {
        $partial = $path . '.' . getmypid();
        file_put_contents($partial, $content);
        rename($partial, $path);
    };
    $write("{$root}/config.php", "<?php\n// Moodle's config.php for the stand-in, written by shim/tests/driver.php.\n"
        . 'require(' . var_export(__DIR__ . '/standin/bootstrap.php', true) . ");\n");
    foreach (glob(STANDIN_PLUGIN . '/cli/*.php') as $file) {
        $write("{$root}/local/mih/cli/" . basename($file), file_get_contents($file));
    }
    return $root;
}

switch ($command) {
    case 'install':
        $DB->install_schema(STANDIN_PLUGIN . '/db/install.xml');
        echo "installed\n";
        break;

    case 'raise':
        // Alternate as Moodle code does: some events inside a committed transaction, some not.
        foreach ($events($args[0]) as $i => $data) {
            if ($i % 2) {
                $transaction = $DB->start_delegated_transaction();
                standin_trigger($data);
                $transaction->allow_commit();
            } else {
                standin_trigger($data);
            }
        }
        if (in_array('--no-send', $flags, true)) {
            core_shutdown_manager::standin_forget();
        }
        $out(['raised' => count($events($args[0])), 'debugging' => standin_debugging::$messages]);
        break;

    case 'raise-rollback':
        $transaction = $DB->start_delegated_transaction();
        try {
            foreach ($events($args[0]) as $data) {
                standin_trigger($data);
            }
            throw new RuntimeException('the change failed');
        } catch (RuntimeException $e) {
            try {
                $transaction->rollback($e);
            } catch (RuntimeException $rethrown) {
                // Moodle rethrows the exception given to rollback(); the request would show it.
            }
        }
        $out(['rolledback' => true]);
        break;

    case 'send':
        // --start-at=<unix ms>: begin then, so several senders started together really overlap.
        foreach ($flags as $flag) {
            if (str_starts_with($flag, '--start-at=')) {
                $wait = (int) substr($flag, strlen('--start-at=')) * 1000 - (int) (microtime(true) * 1e6);
                if ($wait > 0) {
                    usleep($wait);
                }
            }
        }
        $report = (new \local_mih\sender(\local_mih\config::load()))->send(PHP_INT_MAX, 0, !in_array('--wait', $flags, true));
        $out($report);
        break;

    case 'task':
        $name = $args[0] ?? 'send_outbox';
        if (!preg_match('/^[a-z_]+$/', $name) || !class_exists($class = "\\local_mih\\task\\{$name}")) {
            fwrite(STDERR, "no scheduled task {$name}\n");
            exit(2);
        }
        (new $class())->execute();
        break;

    case 'cli':
        $script = $args[0] ?? '';
        if (!preg_match('/^[a-z_]+\.php$/', $script) || !is_file(STANDIN_PLUGIN . "/cli/{$script}")) {
            fwrite(STDERR, "no cli script {$script}\n");
            exit(2);
        }
        // This process becomes the script's: the caller sees its output, exit status or signal.
        pcntl_exec(PHP_BINARY, array_merge([standin_moodle_tree() . "/local/mih/cli/{$script}"], array_slice($argv, 3)));
        fwrite(STDERR, "cannot run php\n");
        exit(2);

    case 'status':
        $summary = \local_mih\outbox::summary();
        $summary->parkedrows = \local_mih\outbox::parked(1000);
        $summary->rows = array_values($DB->get_records('local_mih_outbox', null, 'id', 'id, uuid, eventname, status, attempts, nextattempt, lasterror'));
        $out($summary);
        break;

    case 'retry-parked':
        $out(['retried' => \local_mih\outbox::retry_parked()]);
        break;

    case 'facade':
    case 'fluent':
        [$service, $path, $method, $json] = $args + ['', '/', 'POST', '{}'];
        $payload = json_decode($json, true) ?? [];
        try {
            $response = $command === 'facade'
                ? \local_mih\hub::request($service, $path, $payload, $method)
                : \local_mih\hub::send($service)->to($path)->with($payload)->method($method)->dispatch();
            $out(['class' => get_class($response), 'success' => $response->success, 'httpstatus' => $response->httpstatus,
                'body' => $response->body, 'error' => $response->error, 'latencyms' => $response->latencyms,
                'attempts' => $response->attempts, 'circuit' => $response->circuit, 'is_ok' => $response->is_ok(),
                'json' => $response->body !== null && json_decode($response->body) !== null ? $response->json() : null]);
        } catch (moodle_exception $e) {
            $out(['exception' => get_class($e), 'errorcode' => $e->errorcode, 'module' => $e->module, 'message' => $e->getMessage()]);
        }
        break;

    case 'check':
        $out((new \local_mih\connection_check(\local_mih\config::load()))->run());
        break;

    default:
        fwrite(STDERR, "unknown command `{$command}`; see the top of driver.php\n");
        exit(2);
}

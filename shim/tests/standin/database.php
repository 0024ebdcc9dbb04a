<?php
// A stand-in for the part of Moodle's $DB (moodle_database) that local_mih calls, over a real
// PostgreSQL or SQLite database through PDO, with real (nested, delegated) transactions.
// Behaves as Moodle's drivers do where the plugin could notice: {table} names get the prefix,
// named and positional parameters, every value comes back as a string, records keyed by their
// first column, and a rollback of an inner transaction rolls back the whole outer one.

namespace standin;

final class database {
    public \PDO $pdo;
    private string $prefix;
    /** @var transaction[] */
    private array $transactions = [];

    public function __construct(string $dsn, string $prefix = 'mdl_') {
        $this->pdo = new \PDO($dsn, null, null, [
            \PDO::ATTR_ERRMODE => \PDO::ERRMODE_EXCEPTION,
            \PDO::ATTR_EMULATE_PREPARES => true,
            \PDO::ATTR_STRINGIFY_FETCHES => true,
        ]);
        $this->prefix = $prefix;
    }

    public function get_prefix(): string {
        return $this->prefix;
    }

    /** Creates the tables of an install.xml (what Moodle's installer does), dropping old ones. */
    public function install_schema(string $installxml): void {
        $xml = simplexml_load_file($installxml);
        foreach ($xml->TABLES->TABLE as $table) {
            $name = $this->prefix . $table['NAME'];
            $columns = [];
            foreach ($table->FIELDS->FIELD as $field) {
                $columns[] = $this->column($field);
            }
            $this->pdo->exec("DROP TABLE IF EXISTS {$name}");
            $this->pdo->exec("CREATE TABLE {$name} (" . implode(', ', $columns) . ')');
            foreach ($table->INDEXES->INDEX ?? [] as $index) {
                $unique = (string) $index['UNIQUE'] === 'true' ? 'UNIQUE ' : '';
                $iname = $name . '_' . preg_replace('/\W/', '', (string) $index['NAME']) . '_ix';
                $this->pdo->exec("CREATE {$unique}INDEX {$iname} ON {$name} (" . $index['FIELDS'] . ')');
            }
        }
    }

    private function column(\SimpleXMLElement $field): string {
        $name = (string) $field['NAME'];
        $pg = $this->pdo->getAttribute(\PDO::ATTR_DRIVER_NAME) === 'pgsql';
        if ((string) $field['SEQUENCE'] === 'true') {
            return $pg ? "{$name} BIGSERIAL PRIMARY KEY" : "{$name} INTEGER PRIMARY KEY AUTOINCREMENT";
        }
        $type = match ((string) $field['TYPE']) {
            'int' => 'BIGINT',
            'char' => 'VARCHAR(' . $field['LENGTH'] . ')',
            'text' => 'TEXT',
            'number' => 'NUMERIC',
            default => throw new \RuntimeException('stand-in: unsupported XMLDB type ' . $field['TYPE']),
        };
        $sql = "{$name} {$type}";
        if ((string) $field['NOTNULL'] === 'true') {
            $sql .= ' NOT NULL';
        }
        if (isset($field['DEFAULT'])) {
            $sql .= ' DEFAULT ' . $this->pdo->quote((string) $field['DEFAULT']);
        }
        return $sql;
    }

    // Transactions.

    public function start_delegated_transaction(): transaction {
        if (!$this->transactions) {
            $this->pdo->beginTransaction();
        }
        $transaction = new transaction($this);
        $this->transactions[] = $transaction;
        return $transaction;
    }

    public function is_transaction_started(): bool {
        return (bool) $this->transactions;
    }

    /** @internal */
    public function commit_delegated_transaction(transaction $transaction): void {
        if (end($this->transactions) !== $transaction) {
            throw new \coding_exception('stand-in: transactions must be committed innermost first');
        }
        array_pop($this->transactions);
        if (!$this->transactions) {
            $this->pdo->commit();
            \core\event\manager::database_transaction_commited();
        }
    }

    /** @internal */
    public function rollback_delegated_transaction(transaction $transaction, ?\Throwable $e): void {
        // As Moodle: any rollback ends every open transaction.
        $this->transactions = [];
        if ($this->pdo->inTransaction()) {
            $this->pdo->rollBack();
        }
        \core\event\manager::database_transaction_rolledback();
        if ($e !== null) {
            throw $e;
        }
    }

    // Reads.

    public function get_records_sql(string $sql, ?array $params = null, int $limitfrom = 0, int $limitnum = 0): array {
        if ($limitnum > 0) {
            $sql .= ' LIMIT ' . (int) $limitnum;
        }
        if ($limitfrom > 0) {
            $sql .= ' OFFSET ' . (int) $limitfrom;
        }
        $records = [];
        foreach ($this->query($sql, $params)->fetchAll(\PDO::FETCH_ASSOC) as $row) {
            $key = reset($row);
            if (isset($records[$key])) {
                debugging("stand-in: duplicate value '{$key}' in the first column of: {$sql}");
            }
            $records[$key] = (object) $row;
        }
        return $records;
    }

    public function get_records_select(string $table, ?string $select, ?array $params = null, string $sort = '',
            string $fields = '*', int $limitfrom = 0, int $limitnum = 0): array {
        $sql = "SELECT {$fields} FROM {" . $table . "}" . ($select ? " WHERE {$select}" : '') . ($sort ? " ORDER BY {$sort}" : '');
        return $this->get_records_sql($sql, $params, $limitfrom, $limitnum);
    }

    public function get_records(string $table, ?array $conditions = null, string $sort = '', string $fields = '*',
            int $limitfrom = 0, int $limitnum = 0): array {
        [$select, $params] = $this->where($conditions ?? []);
        return $this->get_records_select($table, $select, $params, $sort, $fields, $limitfrom, $limitnum);
    }

    public function get_record_sql(string $sql, ?array $params = null) {
        $records = $this->get_records_sql($sql, $params);
        if (count($records) > 1) {
            debugging('stand-in: get_record_sql found more than one record');
        }
        return $records ? reset($records) : false;
    }

    public function get_field_select(string $table, string $return, string $select, ?array $params = null) {
        $value = $this->query("SELECT {$return} FROM {" . $table . "} WHERE {$select}", $params)->fetchColumn();
        return $value === false ? false : $value;
    }

    public function get_field_sql(string $sql, ?array $params = null) {
        return $this->query($sql, $params)->fetchColumn();
    }

    public function get_fieldset_sql(string $sql, ?array $params = null): array {
        return $this->query($sql, $params)->fetchAll(\PDO::FETCH_COLUMN);
    }

    public function count_records_select(string $table, string $select, ?array $params = null): int {
        return (int) $this->query("SELECT COUNT(*) FROM {" . $table . "}" . ($select ? " WHERE {$select}" : ''), $params)
            ->fetchColumn();
    }

    public function count_records(string $table, ?array $conditions = null): int {
        [$select, $params] = $this->where($conditions ?? []);
        return $this->count_records_select($table, $select, $params);
    }

    public function record_exists_select(string $table, string $select, ?array $params = null): bool {
        return (bool) $this->query("SELECT 1 FROM {" . $table . "} WHERE {$select} LIMIT 1", $params)->fetchColumn();
    }

    // Writes.

    public function insert_record(string $table, $dataobject, bool $returnid = true, bool $bulk = false) {
        $data = (array) $dataobject;
        unset($data['id']);
        $columns = array_keys($data);
        $sql = 'INSERT INTO {' . $table . '} (' . implode(', ', $columns) . ') VALUES ('
            . implode(', ', array_map(static fn($c) => ':' . $c, $columns)) . ')';
        $this->query($sql, $data);
        return $returnid ? (int) $this->pdo->lastInsertId() : true;
    }

    public function execute(string $sql, ?array $params = null): bool {
        $this->query($sql, $params);
        return true;
    }

    public function delete_records_select(string $table, string $select, ?array $params = null): bool {
        $this->query("DELETE FROM {" . $table . "} WHERE {$select}", $params);
        return true;
    }

    public function delete_records(string $table, ?array $conditions = null): bool {
        [$select, $params] = $this->where($conditions ?? []);
        $this->query("DELETE FROM {" . $table . "}" . ($select ? " WHERE {$select}" : ''), $params);
        return true;
    }

    public function get_in_or_equal($items, int $type = SQL_PARAMS_QM, string $prefix = 'param', bool $equal = true): array {
        $items = (array) $items;
        if (!$items) {
            throw new \coding_exception('stand-in: get_in_or_equal() needs at least one item');
        }
        if ($type === SQL_PARAMS_QM) {
            $marks = implode(',', array_fill(0, count($items), '?'));
            return [count($items) === 1 ? ($equal ? '= ?' : '<> ?') : ($equal ? "IN ({$marks})" : "NOT IN ({$marks})"),
                array_values($items)];
        }
        static $counter = 0;
        $params = [];
        foreach (array_values($items) as $item) {
            $params[$prefix . (++$counter)] = $item;
        }
        $names = implode(',', array_map(static fn($n) => ':' . $n, array_keys($params)));
        if (count($params) === 1) {
            return [($equal ? '= ' : '<> ') . $names, $params];
        }
        return [($equal ? 'IN (' : 'NOT IN (') . $names . ')', $params];
    }

    // Internals.

    private function where(array $conditions): array {
        $clauses = [];
        $params = [];
        foreach ($conditions as $column => $value) {
            if ($value === null) {
                $clauses[] = "{$column} IS NULL";
            } else {
                $clauses[] = "{$column} = :c_{$column}";
                $params["c_{$column}"] = $value;
            }
        }
        return [implode(' AND ', $clauses), $params];
    }

    private function query(string $sql, ?array $params): \PDOStatement {
        $sql = preg_replace_callback('/\{([a-z][a-z0-9_]*)\}/', fn($m) => $this->prefix . $m[1], $sql);
        $params ??= [];
        $this->check_params($sql, $params);
        try {
            $statement = $this->pdo->prepare($sql);
            foreach ($params as $name => $value) {
                $type = match (true) {
                    $value === null => \PDO::PARAM_NULL,
                    is_int($value) => \PDO::PARAM_INT,
                    is_bool($value) => \PDO::PARAM_INT,
                    default => \PDO::PARAM_STR,
                };
                $statement->bindValue(is_int($name) ? $name + 1 : ':' . $name, is_bool($value) ? (int) $value : $value, $type);
            }
            $statement->execute();
            return $statement;
        } catch (\PDOException $e) {
            throw new \dml_write_exception($e->getMessage(), $sql, $params);
        }
    }

    /** Moodle refuses a named parameter used twice or unused, and mixed kinds: so does this. */
    private function check_params(string $sql, array $params): void {
        preg_match_all('/(?<!:):([a-z][a-z0-9_]*)/', $sql, $named);
        $qm = substr_count($sql, '?');
        if ($named[1] && $qm) {
            throw new \coding_exception('stand-in: mixed ? and :named parameters');
        }
        if ($named[1]) {
            $counts = array_count_values($named[1]);
            foreach ($counts as $name => $count) {
                if ($count > 1) {
                    throw new \coding_exception("stand-in: named parameter :{$name} used {$count} times (Moodle refuses this)");
                }
                if (!array_key_exists($name, $params)) {
                    throw new \coding_exception("stand-in: missing parameter :{$name}");
                }
            }
            foreach (array_keys($params) as $name) {
                if (!isset($counts[$name])) {
                    throw new \coding_exception("stand-in: parameter :{$name} not used in the query");
                }
            }
        } elseif ($qm !== count($params)) {
            throw new \coding_exception("stand-in: {$qm} ? placeholders but " . count($params) . ' parameters');
        }
    }
}

final class transaction {
    private bool $done = false;

    public function __construct(private database $db) {
    }

    public function allow_commit(): void {
        if ($this->done) {
            throw new \coding_exception('stand-in: transaction already finished');
        }
        $this->done = true;
        $this->db->commit_delegated_transaction($this);
    }

    public function rollback(?\Throwable $e = null): void {
        $this->done = true;
        $this->db->rollback_delegated_transaction($this, $e);
    }
}

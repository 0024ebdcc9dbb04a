<?php
// Moodle's lib/clilib.php, which the plugin's cli/ scripts load: the stand-in's CLI functions
// (cli_get_params(), cli_error(), cli_problem()) are already defined by standin/moodle.php.

<?php
// The stand-in recorder's observer (recorder.php), registered by bootstrap.php like a plugin's
// db/events.php when MIH_STANDIN_EVENT_LOG is set. Not internal: like most plugins' observers,
// it would wait for an open transaction to commit.

$observers = [
    [
        'eventname' => '\local_mih\event\webhook_received',
        'callback' => 'standin_recorder::observe',
        'internal' => false,
    ],
];

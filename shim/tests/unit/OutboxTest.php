<?php
// The outbox on a real database: claims split rows between senders, backoff holds rows back,
// parked rows wait for an administrator, and only the claim's holder settles its rows.

use local_mih\event_record;
use local_mih\outbox;
use PHPUnit\Framework\TestCase;

final class OutboxTest extends TestCase {
    protected function setUp(): void {
        global $DB;
        $DB->install_schema(STANDIN_PLUGIN . '/db/install.xml');
    }

    private function add(int $count): void {
        $class = standin_event_class('\\core\\event\\course_viewed');
        for ($i = 0; $i < $count; $i++) {
            outbox::add(event_record::of($class::create(['courseid' => $i])));
        }
    }

    public function test_claims_never_overlap_and_expire(): void {
        $this->add(10);
        $one = outbox::claim(6, str_repeat('a', 32), 60);
        $two = outbox::claim(6, str_repeat('b', 32), 60);
        $this->assertCount(6, $one);
        $this->assertCount(4, $two, 'the second sender gets the rest');
        $this->assertSame([], array_intersect(array_column($one, 'id'), array_column($two, 'id')));
        $this->assertSame([], outbox::claim(6, str_repeat('c', 32), 60));
        // A claim by a sender that died runs out, and its rows go to the next sender.
        $this->add(2);
        $dead = outbox::claim(10, str_repeat('d', 32), -1);
        $this->assertCount(2, $dead);
        $this->assertSame(array_column($dead, 'id'), array_column(outbox::claim(10, str_repeat('e', 32), 60), 'id'));
    }

    public function test_rows_are_deleted_only_under_their_claim(): void {
        $this->add(3);
        $rows = outbox::claim(3, str_repeat('a', 32), 60);
        $ids = array_map(static fn($r) => (int) $r->id, $rows);
        outbox::delete($ids, str_repeat('x', 32));
        $this->assertSame(3, outbox::summary()->pending, 'another claim deletes nothing');
        outbox::delete($ids, str_repeat('a', 32));
        $this->assertSame(0, outbox::summary()->pending);
    }

    public function test_backoff_holds_rows_back_until_the_hub_stores_events_again(): void {
        $this->add(2);
        $rows = outbox::claim(2, str_repeat('a', 32), 60);
        // Read before backing off: a clock second may pass before the assertion.
        $now = time();
        outbox::back_off($rows, str_repeat('a', 32), 'the hub did not answer', 30);
        $summary = outbox::summary();
        $this->assertSame([2, 2], [$summary->pending, $summary->waiting]);
        $this->assertSame('the hub did not answer', $summary->lasterror);
        $this->assertGreaterThanOrEqual($now + 30, (int) $summary->nextattempt);
        $this->assertTrue(outbox::backing_off());
        $this->assertSame([], outbox::claim(2, str_repeat('b', 32), 60));
        $this->assertCount(2, outbox::claim(2, str_repeat('c', 32), 60, true), 'sending now ignores the backoff');
        outbox::release(array_map(static fn($r) => (int) $r->id, $rows), str_repeat('c', 32));
        outbox::end_backoff();
        $this->assertFalse(outbox::backing_off());
        $again = outbox::claim(2, str_repeat('d', 32), 60);
        $this->assertSame(['1', '1'], array_column($again, 'attempts'), 'the failed attempt is counted');
    }

    public function test_parked_rows_wait_for_retry_or_discard(): void {
        $this->add(3);
        $rows = outbox::claim(3, str_repeat('a', 32), 60);
        outbox::park((int) $rows[0]->id, str_repeat('a', 32), 'contextid: must be an id');
        outbox::park((int) $rows[1]->id, str_repeat('a', 32), 'crud: must be one of');
        $this->assertSame(2, outbox::summary()->parked);
        $this->assertSame('crud: must be one of', outbox::parked()[0]->lasterror, 'newest first');
        $this->assertSame(1, outbox::retry_parked([(int) $rows[0]->id]));
        $this->assertSame(1, outbox::discard_parked());
        $this->assertSame([2, 0], [outbox::summary()->pending, outbox::summary()->parked]);
    }
}

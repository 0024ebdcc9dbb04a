-- What a rule's later jobs of one ordering key do when one of its jobs is dead-lettered:
-- 'skip' goes on with the next (the default, and what every rule did before), 'hold' keeps the
-- key's later jobs waiting until that dead letter is replayed and delivered, or deleted.
ALTER TABLE rules
    ADD COLUMN ordering_on_dead_letter TEXT NOT NULL DEFAULT 'skip'
        CHECK (ordering_on_dead_letter IN ('skip', 'hold'));

//! The Moodle plugin (`shim/moodle`) against a running hub: its classes run unchanged on the
//! stand-in for the Moodle APIs they call (`shim/tests/standin`: a real PostgreSQL database
//! with real transactions, real curl), one PHP process per Moodle request or cron run; and,
//! when a real Moodle tree is installed (`scripts/moodle-dev`), in that Moodle.

mod driver;
mod events;
mod facade;
mod inbound;
mod php;
mod real;

//! End-to-end tests: the real `sluice` binary, real plugin components, real
//! SQLite files. Run with `cargo xtask test`.

mod audit;
mod bad_plans;
mod change_set;
mod concurrent_writer;
mod conformance;
mod crash;
mod examples_pg;
mod examples_redis;
mod failures;
mod field;
mod gates;
mod golang_migrate;
mod happy_path;
mod journal_format;
mod later_writes;
mod leases;
mod pg_journal;
mod postgres;
mod preview;
mod probes;
mod progress;
mod redis;
mod rehearse;
mod report;
mod report_html;
mod rollback_integrity;
mod runtime;
mod schema_proof;
mod security;
mod sqitch;
mod sqitch_sqlite;
mod template;
mod undo_only_applied;

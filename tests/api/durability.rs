//! The durability settings the store runs with, read back from the database
//! (docs/reliability.md, "durability setting").

use crate::helpers::{Db, TestApp, current_db};

on_both_stores!(the_store_reads_back_settings_that_keep_every_acknowledged_task);
async fn the_store_reads_back_settings_that_keep_every_acknowledged_task() {
    let app = TestApp::spawn().await;

    let durability = app.state.store.durability().await.unwrap();

    match current_db() {
        Db::Sqlite => assert_eq!(durability, "sqlite journal_mode=wal synchronous=FULL"),
        Db::Postgres => {
            assert!(durability.contains("synchronous_commit=on"), "{durability}");
            assert!(durability.contains("fsync=on"), "{durability}");
        }
    }
}

//! The shadow-table pattern (installed by every service's migration runner): a table with
//! `queue_shadow.attach` records every change, with who and in which transaction.

use crate::support::{Audit, exec};
use diesel_async::RunQueryDsl;

#[derive(diesel::QueryableByName, Debug)]
struct ShadowRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    operation: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    old_name: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    new_name: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    db_user: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    txid: i64,
}

#[tokio::test]
async fn every_insert_update_and_delete_is_recorded_with_user_and_transaction() {
    let a = Audit::start().await;
    let mut db = a.attacker().await;
    for sql in [
        "CREATE TABLE public.widgets (id int PRIMARY KEY, name text)",
        "SELECT queue_shadow.attach('public.widgets')",
        "INSERT INTO public.widgets VALUES (1, 'a'), (2, 'b')",
        "BEGIN; UPDATE public.widgets SET name = 'c' WHERE id = 1; DELETE FROM public.widgets WHERE id = 2; COMMIT",
    ] {
        exec(&mut db, sql).await.expect(sql);
    }
    let rows: Vec<ShadowRow> = diesel::sql_query(
        "SELECT operation, old_row->>'name' AS old_name, new_row->>'name' AS new_name, db_user, txid
         FROM public.widgets_shadow ORDER BY shadow_id",
    )
    .load(&mut db)
    .await
    .expect("shadow");
    let ops: Vec<(&str, Option<&str>, Option<&str>)> =
        rows.iter().map(|r| (r.operation.as_str(), r.old_name.as_deref(), r.new_name.as_deref())).collect();
    assert_eq!(
        ops,
        vec![
            ("INSERT", None, Some("a")),
            ("INSERT", None, Some("b")),
            ("UPDATE", Some("a"), Some("c")),
            ("DELETE", Some("b"), None)
        ]
    );
    assert!(rows.iter().all(|r| r.db_user == "queue"));
    assert_eq!(rows[0].txid, rows[1].txid, "one statement, one transaction");
    assert_eq!(rows[2].txid, rows[3].txid, "the explicit transaction");
    assert_ne!(rows[1].txid, rows[2].txid);
    // Attaching twice is harmless: still one record per change.
    exec(&mut db, "SELECT queue_shadow.attach('public.widgets'); INSERT INTO public.widgets VALUES (3, 'd')")
        .await
        .expect("again");
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let n: N =
        diesel::sql_query("SELECT count(*) AS n FROM public.widgets_shadow").get_result(&mut db).await.expect("count");
    assert_eq!(n.n, 5);
}

/// pgaudit is loaded on the clusters this project starts and logs DDL for the Queue database.
#[tokio::test]
async fn pgaudit_logs_ddl() {
    let a = Audit::start().await;
    let mut db = a.attacker().await;
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        v: String,
    }
    let libs: Setting = diesel::sql_query("SELECT current_setting('shared_preload_libraries') AS v")
        .get_result(&mut db)
        .await
        .expect("show");
    assert!(libs.v.contains("pgaudit"), "pgaudit not loaded: {}", libs.v);
    let log: Setting =
        diesel::sql_query("SELECT current_setting('pgaudit.log') AS v").get_result(&mut db).await.expect("show");
    assert_eq!(log.v, "ddl,role");
    let marker = format!("queue_pgaudit_probe_{}", uuid::Uuid::new_v4().simple());
    exec(&mut db, &format!("CREATE TABLE public.{marker} (x int)")).await.expect("ddl");
    if let Some(path) = queue_testkit::server_log() {
        let mut found = false;
        for _ in 0..50 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().any(|l| l.contains("AUDIT: SESSION") && l.contains(&marker)) {
                found = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(found, "no pgaudit line for {marker} in {}", path.display());
    }
}

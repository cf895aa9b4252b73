//! MapReduce's WordCount in SQL (the README's example): the map stage counts words per
//! input split, the shuffle routes each word to one reducer, the reduce stage adds up.

mod common;

use datafusion::prelude::SessionContext;
use fletch::LocalCluster;

const TEXT: &str = "the quick brown fox\njumps over the lazy dog\nThe dog barks\nthe end\n";

pub const WORDCOUNT: &str = "SELECT word, count(*) AS n \
     FROM (SELECT unnest(string_to_array(lower(line), ' ')) AS word FROM lines) \
     WHERE word <> '' \
     GROUP BY word \
     ORDER BY n DESC, word";

async fn register_lines(ctx: &SessionContext, path: &std::path::Path) {
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE lines (line VARCHAR) STORED AS CSV LOCATION '{}' \
         OPTIONS ('format.has_header' 'false', 'format.delimiter' '|')",
        path.display()
    ))
    .await
    .expect("create table")
    .collect()
    .await
    .expect("create table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wordcount_matches_single_node_and_shuffles_on_the_word() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("book.txt");
    std::fs::write(&path, TEXT.repeat(50)).expect("write text");

    let cluster = LocalCluster::start(2).await.expect("cluster");
    let ctx = cluster.session();
    register_lines(&ctx, &path).await;
    let oracle = common::oracle();
    register_lines(&oracle, &path).await;

    let expected = common::query(&oracle, WORDCOUNT).await;
    let actual = common::query(&ctx, WORDCOUNT).await;
    assert_eq!(common::rows(&actual), common::rows(&expected));
    assert_eq!(common::rows(&actual)[0], "the|200");

    let explain = common::query(&ctx, &format!("EXPLAIN {WORDCOUNT}")).await;
    let plan = common::rows(&explain).join("\n");
    // Map: partial counts per split, written hashed on the word.
    assert!(
        plan.contains("ShuffleWriterExec: tasks=") && plan.contains("output=Hash([word@0]"),
        "{plan}"
    );
    assert!(
        plan.contains("AggregateExec: mode=Partial, gby=[word@0 as word]"),
        "{plan}"
    );
    // Shuffle and reduce: a reader of that stage feeds the final aggregate.
    assert!(
        plan.contains("ExchangeReaderExec: shuffle from stage 1"),
        "{plan}"
    );
    assert!(
        plan.contains("AggregateExec: mode=FinalPartitioned, gby=[word@0 as word]"),
        "{plan}"
    );
    cluster.shutdown().await;
}

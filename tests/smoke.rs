use datafusion::arrow::util::pretty::pretty_format_batches;
use fletch::LocalCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let cluster = LocalCluster::start(2).await.unwrap();
    let ctx = cluster.session();
    for sql in [
        "SELECT 1",
        "CREATE TABLE t AS VALUES (1, 'a'), (2, 'b'), (3, 'a')",
        "SELECT column2, count(*), sum(column1) FROM t GROUP BY column2 ORDER BY column2",
        "EXPLAIN SELECT column2, count(*) FROM t GROUP BY column2",
        "SELECT 1/0",
    ] {
        match ctx.sql(sql).await {
            Ok(df) => match df.collect().await {
                Ok(b) => println!("{sql}\n{}", pretty_format_batches(&b).unwrap()),
                Err(e) => println!("{sql}\nEXEC ERROR {e}"),
            },
            Err(e) => println!("{sql}\nPLAN ERROR {e}"),
        }
    }
    println!("{:?}", cluster.executor_stats());
}

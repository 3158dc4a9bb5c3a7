//! A sync costs a constant number of statements per source database, however many tables it
//! holds, counted on the wire by a proxy that reads each protocol's query messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metasync_tests::assert::stats;
use metasync_tests::create_source;
use metasync_tests::fixtures::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy in front of a real server that counts the statements clients send: PostgreSQL
/// `Query` and `Execute` messages, or MySQL `COM_QUERY` and `COM_STMT_EXECUTE` packets. An
/// independent check of the scanner's own `source_statements`.
struct CountingProxy {
    port: u16,
    statements: Arc<AtomicU64>,
}

impl CountingProxy {
    async fn start(upstream: u16, mysql: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let statements = Arc::new(AtomicU64::new(0));
        let counter = statements.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let server = TcpStream::connect(("127.0.0.1", upstream)).await?;
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    tokio::spawn(async move {
                        tokio::io::copy(&mut server_read, &mut client_write).await
                    });
                    if mysql {
                        count_mysql(&mut client_read, &mut server_write, &counter).await
                    } else {
                        count_postgres(&mut client_read, &mut server_write, &counter).await
                    }
                });
            }
        });
        Self { port, statements }
    }

    fn take(&self) -> u64 {
        self.statements.swap(0, Ordering::SeqCst)
    }
}

async fn forward(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    len: usize,
    head: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut body = vec![0; len];
    from.read_exact(&mut body).await?;
    to.write_all(head).await?;
    to.write_all(&body).await?;
    Ok(body)
}

async fn count_postgres(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    counter: &AtomicU64,
) -> std::io::Result<()> {
    // The startup message has no type byte.
    let mut len = [0; 4];
    from.read_exact(&mut len).await?;
    forward(from, to, u32::from_be_bytes(len) as usize - 4, &len).await?;
    loop {
        let mut head = [0; 5];
        from.read_exact(&mut head).await?;
        if matches!(head[0], b'Q' | b'E') {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        forward(from, to, len - 4, &head).await?;
    }
}

async fn count_mysql(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    counter: &AtomicU64,
) -> std::io::Result<()> {
    let mut packets = 0u64;
    loop {
        let mut head = [0; 4];
        from.read_exact(&mut head).await?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
        let body = forward(from, to, len, &head).await?;
        packets += 1;
        // The first packet is the handshake response; commands start a sequence at 0.
        if packets > 1 && head[3] == 0 && matches!(body.first(), Some(0x03 | 0x17)) {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// `n` tables of 24 columns: at 500 tables the 12,000 columns are written with COPY (the
/// writer's path for large writes) and read back by the test.
fn many_pg_tables(n: usize) -> String {
    let wide: String = (0..21).map(|i| format!(", w{i} int")).collect();
    let mut sql = String::from("create schema bulk;\n");
    for i in 0..n {
        sql.push_str(&format!(
            "create table bulk.t{i} (id int primary key, a text, b int references bulk.t0 (id) \
             {fk}{wide}); create index t{i}_a on bulk.t{i} (a); \
             comment on table bulk.t{i} is 'n{i}';\n",
            fk = if i == 0 { "deferrable" } else { "" }
        ));
    }
    sql
}

#[tokio::test]
async fn statements_per_database_do_not_grow_with_the_table_count() {
    let s = scanner().await;
    let pg_proxy = CountingProxy::start(5432, false).await;
    let mut pg_counts = Vec::new();
    for n in [10, 500] {
        let source = create_source(&many_pg_tables(n)).await.unwrap();
        let rid = s
            .register_in_clear("postgres", &source, pg_proxy.port)
            .await;
        pg_proxy.take();
        let job = s.sync(rid).await;
        assert_eq!(stats(&job).tables, n as u64, "{job:?}");
        assert_eq!(stats(&job).columns, n as u64 * 24, "{job:?}");
        let last = s.table(rid, "bulk", &format!("t{}", n - 1)).await;
        assert_eq!(column_names(&last).len(), 24);
        assert_eq!(last.definition.comment, Some(format!("n{}", n - 1)));
        let seen = pg_proxy.take();
        pg_counts.push((stats(&job).source_statements, seen));
    }
    assert_eq!(
        pg_counts,
        [(1, 1), (1, 1)],
        "(reported, counted on the wire)"
    );

    let my_proxy = CountingProxy::start(3306, true).await;
    let mut my_counts = Vec::new();
    let mut dbs = Vec::new();
    for n in [10usize, 500] {
        let db = MariaDb::create().await;
        let statements: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "create table `{{db}}`.t{i} (id int primary key, a varchar(20), \
                     key t{i}_a (a)) comment 'n{i}'"
                )
            })
            .collect();
        db.run(&statements.iter().map(String::as_str).collect::<Vec<_>>())
            .await;
        let rid = s.register_in_clear("mysql", &db.name, my_proxy.port).await;
        my_proxy.take();
        let job = s.sync(rid).await;
        assert_eq!(stats(&job).tables, n as u64, "{job:?}");
        let seen = my_proxy.take();
        my_counts.push((stats(&job).source_statements, seen));
        dbs.push(db);
    }
    // The driver adds one statement of its own when it connects (sql_mode, time zone, names).
    assert_eq!(
        my_counts,
        [(9, 10), (9, 10)],
        "(reported, counted on the wire)"
    );
    for db in dbs {
        db.drop().await;
    }
}

//! Which engine's protocol a server speaks, asked only after a connection failed in a way a
//! wrong `kind` explains. A MySQL client aimed at PostgreSQL waits for a greeting that never
//! comes (each side waits for the other to speak first), and a PostgreSQL client aimed at
//! MySQL reads a greeting it cannot parse: without this, the first timed out and the second
//! looked like a broken server, and both were retried as transient.
//!
//! The probe dials the address the outbound policy checked, reads what the server says first
//! (MySQL and MariaDB greet), and if it says nothing, sends PostgreSQL's 8-byte SSLRequest,
//! which any PostgreSQL server answers with one byte. Nothing else is sent, no banner is kept.

use std::net::SocketAddr;
use std::time::Duration;

use metasync_shared::domain::ResourceKind;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long the server gets to speak first, and then to answer the SSLRequest.
const LISTEN_FOR: Duration = Duration::from_millis(500);

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The engine whose protocol the server at `address` speaks, if it is recognisably one.
pub(super) async fn protocol_at(
    address: SocketAddr,
    connect_timeout: Duration,
) -> Option<ResourceKind> {
    let mut stream = tokio::time::timeout(connect_timeout, TcpStream::connect(address))
        .await
        .ok()?
        .ok()?;
    let mut first = [0u8; 5];
    match tokio::time::timeout(LISTEN_FOR, stream.read_exact(&mut first)).await {
        Ok(Ok(_)) => return mysql_greeting(&first).then_some(ResourceKind::Mysql),
        Ok(Err(_)) => return None,
        Err(_) => {} // silent: a server that waits for its client, as PostgreSQL does
    }
    stream.write_all(&SSL_REQUEST).await.ok()?;
    let mut answer = [0u8; 1];
    match tokio::time::timeout(LISTEN_FOR, stream.read_exact(&mut answer)).await {
        Ok(Ok(_)) => postgres_ssl_answer(answer[0]).then_some(ResourceKind::Postgres),
        _ => None,
    }
}

/// A MySQL packet header (3-byte length, sequence 0) opening a protocol-10 greeting, or the
/// error packet a server sends instead of one (a host blocked for too many errors).
fn mysql_greeting(first: &[u8; 5]) -> bool {
    let length = u32::from_le_bytes([first[0], first[1], first[2], 0]);
    first[3] == 0 && (1..=0xff_ffff).contains(&length) && matches!(first[4], 0x0a | 0xff)
}

/// `S` (TLS offered), `N` (not) or `E` (a server too old for the request, answering an error).
fn postgres_ssl_answer(byte: u8) -> bool {
    matches!(byte, b'S' | b'N' | b'E')
}

/// The engine's name and kind as a tenant registers it, for the message that suggests it.
pub(super) fn suggestion(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Postgres => "it speaks PostgreSQL's protocol: register it with kind postgres",
        ResourceKind::Mysql => {
            "it speaks MySQL's protocol: register it with kind mysql (MySQL and MariaDB)"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_and_answers_are_told_apart_from_other_bytes() {
        // MariaDB 10.11's greeting starts: length 0x5b, sequence 0, protocol 10.
        assert!(mysql_greeting(&[0x5b, 0, 0, 0, 0x0a]));
        assert!(mysql_greeting(&[0x45, 0, 0, 0, 0xff]));
        assert!(!mysql_greeting(b"HTTP/"));
        assert!(!mysql_greeting(&[0x5b, 0, 0, 1, 0x0a]));
        assert!(!mysql_greeting(&[0, 0, 0, 0, 0x0a]));
        for byte in [b'S', b'N', b'E'] {
            assert!(postgres_ssl_answer(byte));
        }
        assert!(!postgres_ssl_answer(b'H'));
    }

    #[tokio::test]
    async fn a_postgresql_server_is_recognised_by_its_answer() {
        let address: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        assert_eq!(
            protocol_at(address, Duration::from_secs(5)).await,
            Some(ResourceKind::Postgres)
        );
    }

    #[tokio::test]
    async fn a_silent_or_closed_port_is_no_engine() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = silent.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (socket, _) = silent.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(socket);
        });
        assert_eq!(protocol_at(address, Duration::from_secs(5)).await, None);
        hold.abort();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(protocol_at(closed, Duration::from_secs(5)).await, None);
    }
}

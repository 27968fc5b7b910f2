//! A loopback TCP proxy whose connections can be cut at will: the network fault the
//! conformance suite's `drop_connections` needs. Plain threads, so it outlives the tokio
//! runtime of any one test.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Forwards every connection accepted on `port` to `127.0.0.1:<upstream>`.
pub struct Proxy {
    pub port: u16,
    open: Registry,
}

/// The connections open now: both sockets of each, by connection number.
type Registry = Arc<Mutex<Vec<(u64, TcpStream)>>>;

impl Proxy {
    /// Listen on `listener` (bound by the caller) and forward to `upstream`.
    pub fn start(listener: TcpListener, upstream: u16) -> Proxy {
        let port = listener.local_addr().unwrap().port();
        let open: Registry = Arc::default();
        let registry = open.clone();
        let mut next = 0u64;
        std::thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    next += 1;
                    {
                        let mut open = registry.lock().unwrap();
                        open.push((next, client.try_clone().unwrap()));
                        open.push((next, server.try_clone().unwrap()));
                    }
                    let pair = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    pipe(next, pair.0, pair.1, registry.clone());
                    pipe(next, server, client, registry.clone());
                }
            })
            .unwrap();
        Proxy { port, open }
    }

    /// Cut every connection open now (both directions), as a network fault would; new
    /// connections are accepted as before.
    pub fn drop_connections(&self) -> usize {
        let mut open = self.open.lock().unwrap();
        let n = open.len() / 2;
        for (_, s) in open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        n
    }
}

/// Copy `from` to `to` on a thread until either side closes; then close both and forget
/// connection `id`.
fn pipe(id: u64, mut from: TcpStream, mut to: TcpStream, registry: Registry) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
        registry.lock().unwrap().retain(|(i, _)| *i != id);
    });
}

//! Restore sources for the tests: small HTTP servers on 127.0.0.1 that serve an archive as
//! S3 serves a presigned link (`application/x-gzip`), whole or held after its gzip header
//! until the test releases it, so that a restore stays running whatever the machine's speed.
//! A daemon reaches them only with `restore_host_allowlist: ["127.0.0.1"]`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};

/// `system_extra` for a node that may restore from these links (they are on loopback).
pub const LOOPBACK_ALLOWED: &str = "  backups:\n    restore_host_allowlist: [\"127.0.0.1\"]\n";

/// Bytes of a gzip member's header: what a held archive sends before it waits.
const GZIP_HEADER_BYTES: usize = 10;

/// Serves `body` whole, once per connection; returns the link.
pub fn serve_archive(body: Vec<u8>) -> String {
    serve(move |mut stream| {
        let _ = stream.write_all(&response_head(body.len()));
        let _ = stream.write_all(&body);
    })
}

/// Serves `archive`'s gzip header, then holds each connection until the returned sender is
/// used or dropped, then sends the rest; returns the link and the release.
pub fn serve_held_archive(archive: Vec<u8>) -> (String, mpsc::Sender<()>) {
    assert!(archive.len() > GZIP_HEADER_BYTES, "a gzip archive");
    let (release, released) = mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let url = serve(move |mut stream| {
        let _ = stream.write_all(&response_head(archive.len()));
        let _ = stream.write_all(&archive[..GZIP_HEADER_BYTES]);
        let _ = stream.flush();
        // Err once the test drops the sender: the rest then goes out as well.
        let _ = released.lock().unwrap().recv();
        let _ = stream.write_all(&archive[GZIP_HEADER_BYTES..]);
    });
    (url, release)
}

/// The head of a 200 with `length` bytes of gzip.
fn response_head(length: usize) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-gzip\r\nContent-Length: {length}\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes()
}

/// Answers every connection on its own thread, after reading its request, with `answer`;
/// returns the link. For sources the functions above do not cover.
pub fn serve(answer: impl Fn(TcpStream) + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/backup.tar.gz",
        listener.local_addr().unwrap().port()
    );
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                answer(stream);
            });
        }
    });
    url
}

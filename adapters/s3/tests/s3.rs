//! The S3 adapter against a real S3 server (moto, started by `tests/s3-server.sh`), through
//! the library's real ABI boundary: uploads of several parts and of one, reading back from an
//! offset, stat, list, delete, abort, a bucket that does not exist, a server that dies
//! mid-upload, a part the server refuses once, and a bad part size.

mod support;

use std::time::Duration;

use aerie_adapter_api::host::SinkHandle;
use aerie_adapter_api::{ErrorKind, StoredBackup};
use aerie_s3_test_support::{sha1_hex, Bucket, Proxy, MIB};
use serde_json::{json, Value};
use std::io::Read;
use support::{data, instantiate, within, AdapterOn, AERIE_VERSION};

const SERVER: &str = "8d3ec2e0-4f0e-4a8c-9a57-0c1f1a6e7d21";
const BACKUP: &str = "0b6f2a43-1c55-4d8e-b1a4-6a0f3d9e2c10";

/// Hang guard for whole tests; generous, never a performance check.
const LIMIT: Duration = Duration::from_secs(180);

/// Writes `bytes` in 1 MiB chunks, as the host does.
fn write_all(sink: &mut SinkHandle, bytes: &[u8]) {
    for chunk in bytes.chunks(MIB) {
        sink.write(chunk).unwrap_or_else(|e| panic!("write: {e}"));
    }
}

fn key() -> String {
    format!("{SERVER}/{BACKUP}.tar.gz")
}

#[test]
fn multipart_upload_stores_the_bytes_and_a_sidecar() {
    within(LIMIT, || {
        let bucket = Bucket::new("multipart");
        let (adapter, log) = bucket.adapter(json!({ "part_size": 5 * MIB, "concurrency": 2 }));
        let archive = data(12 * MIB + 12345, 1);
        let sha1 = sha1_hex(&archive);

        let mut sink = adapter.begin_backup(SERVER, BACKUP).unwrap();
        write_all(&mut sink, &archive);
        let stored: StoredBackup = sink.finish(&sha1, archive.len() as u64).unwrap();

        assert_eq!(stored.key, key());
        assert_eq!(stored.size, archive.len() as u64);
        assert!(!stored.panel_completes);
        let numbers: Vec<u32> = stored.parts.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1, 2, 3]);
        let sizes: Vec<u64> = stored.parts.iter().map(|p| p.size).collect();
        assert_eq!(
            sizes,
            [5 * MIB as u64, 5 * MIB as u64, (2 * MIB + 12345) as u64]
        );
        assert!(
            stored.parts.iter().all(|p| p.etag.starts_with('"')),
            "{:?}",
            stored.parts
        );

        assert!(
            bucket.get(&key()) == archive,
            "the object's bytes differ from the archive"
        );
        let head = bucket
            .run(
                bucket
                    .client
                    .head_object()
                    .bucket(&bucket.name)
                    .key(key())
                    .send(),
            )
            .unwrap();
        let etag = head.e_tag().unwrap();
        assert!(
            etag.ends_with("-3\""),
            "not a 3-part multipart ETag: {etag}"
        );
        assert_eq!(head.content_type(), Some("application/x-gzip"));

        let sidecar: Value =
            serde_json::from_slice(&bucket.get(&format!("{}.json", key()))).unwrap();
        assert_eq!(sidecar["checksum"], sha1.as_str());
        assert_eq!(sidecar["checksum_type"], "sha1");
        assert_eq!(sidecar["size"], archive.len() as u64);
        assert_eq!(sidecar["aerie_version"], AERIE_VERSION);
        assert_eq!(sidecar["server"], SERVER);
        assert_eq!(sidecar["backup"], BACKUP);
        assert!(
            sidecar["created_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{sidecar}"
        );

        assert!(bucket.multipart_uploads().is_empty());
        let info = adapter.stat(SERVER, BACKUP).unwrap();
        assert_eq!(info.size, archive.len() as u64);
        assert_eq!(info.sha1.as_deref(), Some(sha1.as_str()));
        assert_eq!(info.key, key());
        assert!(info.created_unix > 0);
        assert!(log.contains("multipart upload created"), "{}", log.dump());
        assert!(log.contains("backup stored"), "{}", log.dump());
        assert!(log.contains("part uploaded"), "{}", log.dump());
    });
}

#[test]
fn a_small_backup_is_one_object() {
    within(LIMIT, || {
        let bucket = Bucket::new("small");
        let (adapter, _log) = bucket.adapter(json!({}));
        let archive = data(100_000, 2);
        let sha1 = sha1_hex(&archive);
        let mut sink = adapter.begin_backup(SERVER, BACKUP).unwrap();
        write_all(&mut sink, &archive);
        let stored = sink.finish(&sha1, archive.len() as u64).unwrap();
        assert_eq!(stored.size, archive.len() as u64);
        assert!(stored.parts.is_empty(), "{:?}", stored.parts);
        assert!(bucket.get(&key()) == archive);
        assert_eq!(
            adapter.stat(SERVER, BACKUP).unwrap().sha1.as_deref(),
            Some(sha1.as_str())
        );
        assert!(bucket.multipart_uploads().is_empty());

        // An empty archive, and one of exactly one part, are single objects too.
        let sink = adapter.begin_backup(SERVER, "empty").unwrap();
        sink.finish(&sha1_hex(b""), 0).unwrap();
        assert!(bucket.get(&format!("{SERVER}/empty.tar.gz")).is_empty());
        let exact = data(5 * MIB, 3);
        let mut sink = adapter.begin_backup(SERVER, "exact").unwrap();
        write_all(&mut sink, &exact);
        let stored = sink.finish(&sha1_hex(&exact), exact.len() as u64).unwrap();
        assert!(stored.parts.is_empty());
        assert!(bucket.get(&format!("{SERVER}/exact.tar.gz")) == exact);
    });
}

#[test]
fn open_reads_from_an_offset() {
    within(LIMIT, || {
        let bucket = Bucket::new("open");
        let (adapter, _log) = bucket.adapter(json!({}));
        let archive = data(11 * MIB + 7, 4);
        let mut sink = adapter.begin_backup(SERVER, BACKUP).unwrap();
        write_all(&mut sink, &archive);
        sink.finish(&sha1_hex(&archive), archive.len() as u64)
            .unwrap();

        for offset in [0, 1, 6 * MIB + 3, archive.len() - 1, archive.len()] {
            let mut source = adapter.open(SERVER, BACKUP, offset as u64).unwrap();
            let mut read = Vec::new();
            source.read_to_end(&mut read).unwrap();
            assert!(
                read == archive[offset..],
                "reading from {offset}: {} bytes",
                read.len()
            );
        }
        let err = adapter
            .open(SERVER, BACKUP, archive.len() as u64 + 1)
            .err()
            .unwrap();
        assert!(err.message.contains("only"), "{err}");

        // Dropping a reader early stops it cleanly.
        let mut source = adapter.open(SERVER, BACKUP, 0).unwrap();
        let mut first = [0; 10];
        source.read_exact(&mut first).unwrap();
        assert_eq!(first, archive[..10]);
        drop(source);

        let err = adapter.open(SERVER, "missing", 0).err().unwrap();
        assert_eq!(err.kind, ErrorKind::NOT_FOUND, "{err}");
    });
}

#[test]
fn delete_removes_the_object_and_its_sidecar() {
    within(LIMIT, || {
        let bucket = Bucket::new("delete");
        let (adapter, _log) = bucket.adapter(json!({}));
        let archive = data(1000, 5);
        let mut sink = adapter.begin_backup(SERVER, BACKUP).unwrap();
        write_all(&mut sink, &archive);
        sink.finish(&sha1_hex(&archive), 1000).unwrap();
        assert!(bucket.exists(&key()) && bucket.exists(&format!("{}.json", key())));

        adapter.delete(SERVER, BACKUP).unwrap();
        assert!(!bucket.exists(&key()));
        assert!(!bucket.exists(&format!("{}.json", key())));
        let err = adapter.stat(SERVER, BACKUP).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NOT_FOUND, "{err}");
        assert!(err.message.contains(BACKUP), "{err}");
        assert_eq!(
            adapter.delete(SERVER, BACKUP).unwrap_err().kind,
            ErrorKind::NOT_FOUND
        );
    });
}

#[test]
fn list_shows_the_backups_of_one_server() {
    within(LIMIT, || {
        let bucket = Bucket::new("list");
        let (adapter, _log) = bucket.adapter(json!({ "prefix": "node-1/" }));
        for (server, backup, len) in [(SERVER, "b1", 10), (SERVER, "b2", 20), ("other", "b3", 30)] {
            let archive = data(len, 6);
            let mut sink = adapter.begin_backup(server, backup).unwrap();
            write_all(&mut sink, &archive);
            sink.finish(&sha1_hex(&archive), len as u64).unwrap();
        }
        // A backup made by another tool (no sidecar) and an unrelated object.
        for (key, body) in [
            (format!("node-1/{SERVER}/wings.tar.gz"), vec![1u8; 40]),
            (format!("node-1/{SERVER}/notes.txt"), vec![2u8; 5]),
        ] {
            bucket
                .run(
                    bucket
                        .client
                        .put_object()
                        .bucket(&bucket.name)
                        .key(key)
                        .body(body.into())
                        .send(),
                )
                .unwrap();
        }

        let mut listed = adapter.list(SERVER).unwrap();
        listed.sort_by(|a, b| a.backup.cmp(&b.backup));
        let summary: Vec<(&str, u64, &str)> = listed
            .iter()
            .map(|i| (i.backup.as_str(), i.size, i.key.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("b1", 10, &*format!("node-1/{SERVER}/b1.tar.gz")),
                ("b2", 20, &*format!("node-1/{SERVER}/b2.tar.gz")),
                ("wings", 40, &*format!("node-1/{SERVER}/wings.tar.gz")),
            ]
        );
        assert!(listed
            .iter()
            .all(|i| i.server.as_deref() == Some(SERVER) && i.created_unix > 0));
        assert!(adapter.list("nobody").unwrap().is_empty());

        let wings = adapter.stat(SERVER, "wings").unwrap();
        assert_eq!((wings.size, wings.sha1), (40, None));
    });
}

#[test]
fn abort_leaves_nothing_behind() {
    within(LIMIT, || {
        let bucket = Bucket::new("abort");
        let (adapter, log) = bucket.adapter(json!({}));
        let mut sink = adapter.begin_backup(SERVER, BACKUP).unwrap();
        write_all(&mut sink, &data(12 * MIB, 7));
        assert_eq!(
            bucket.multipart_uploads(),
            [key()],
            "parts were not uploaded while writing"
        );
        sink.abort().unwrap();
        assert!(bucket.multipart_uploads().is_empty());
        assert!(!bucket.exists(&key()));
        assert!(log.contains("multipart upload aborted"), "{}", log.dump());

        // A sink dropped without finish or abort is aborted in the background.
        let mut sink = adapter.begin_backup(SERVER, BACKUP).unwrap();
        write_all(&mut sink, &data(12 * MIB, 8));
        drop(sink);
        bucket.wait_for_no_uploads(Duration::from_secs(60));
        assert!(!bucket.exists(&key()));

        // A host that says the archive has another size than was written gets an error, and
        // the upload is aborted.
        let mut sink = adapter.begin_backup(SERVER, BACKUP).unwrap();
        write_all(&mut sink, &data(6 * MIB, 9));
        let err = sink.finish("0000", 1).unwrap_err();
        assert!(err.message.contains("were written"), "{err}");
        assert!(bucket.multipart_uploads().is_empty());
        assert!(!bucket.exists(&key()));
    });
}

#[test]
fn discard_incomplete_aborts_what_a_crash_left() {
    within(LIMIT, || {
        let bucket = Bucket::new("discard");
        let (adapter, _log) = bucket.adapter(json!({}));
        for _ in 0..2 {
            bucket
                .run(
                    bucket
                        .client
                        .create_multipart_upload()
                        .bucket(&bucket.name)
                        .key(key())
                        .send(),
                )
                .unwrap();
        }
        let other = format!("{SERVER}/{BACKUP}.tar.gz.other");
        bucket
            .run(
                bucket
                    .client
                    .create_multipart_upload()
                    .bucket(&bucket.name)
                    .key(&other)
                    .send(),
            )
            .unwrap();
        adapter.discard_incomplete(SERVER, BACKUP).unwrap();
        assert_eq!(bucket.multipart_uploads(), [other]);
        adapter.discard_incomplete(SERVER, BACKUP).unwrap();
    });
}

#[test]
fn a_missing_bucket_is_a_clear_error() {
    within(LIMIT, || {
        let bucket = Bucket::without_creating("missing");
        let (adapter, _log) = bucket.adapter(json!({}));

        // Large: the error comes from a write, when the first part is sent.
        let mut sink = adapter.begin_backup(SERVER, BACKUP).unwrap();
        let archive = data(12 * MIB, 10);
        let err = archive
            .chunks(MIB)
            .find_map(|chunk| sink.write(chunk).err())
            .expect("writing into a missing bucket fails");
        eprintln!("the error: {err}");
        assert_eq!(err.kind, ErrorKind::NOT_FOUND, "{err}");
        assert!(
            err.message
                .contains(&format!("bucket `{}` does not exist", bucket.name)),
            "{err}"
        );
        let again = sink.finish("0000", archive.len() as u64).unwrap_err();
        assert!(again.message.contains("already failed"), "{again}");

        // Small: the error comes from finish.
        let mut sink = adapter.begin_backup(SERVER, BACKUP).unwrap();
        sink.write(b"tiny").unwrap();
        let err = sink.finish("0000", 4).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NOT_FOUND, "{err}");
        assert!(err.message.contains(&bucket.name), "{err}");

        let buckets = bucket.run(bucket.client.list_buckets().send()).unwrap();
        assert!(buckets
            .buckets()
            .iter()
            .all(|b| b.name() != Some(bucket.name.as_str())));
    });
}

#[test]
fn a_refused_part_is_retried() {
    within(LIMIT, || {
        let bucket = Bucket::new("retry");
        let proxy = Proxy::start();
        proxy.refuse_next_parts(1);
        let (adapter, log) = bucket.adapter(json!({ "endpoint": proxy.url }));
        let archive = data(12 * MIB, 11);
        let sha1 = sha1_hex(&archive);
        let mut sink = adapter.begin_backup(SERVER, BACKUP).unwrap();
        write_all(&mut sink, &archive);
        let stored = sink.finish(&sha1, archive.len() as u64).unwrap();

        assert_eq!(proxy.refused(), 1);
        assert_eq!(proxy.parts_forwarded(), 3);
        assert_eq!(stored.parts.len(), 3);
        assert!(
            bucket.get(&key()) == archive,
            "the object's bytes differ after a retry"
        );
        assert!(log.contains("SlowDown"), "{}", log.dump());
        assert!(log.contains("retrying"), "{}", log.dump());
        assert!(bucket.multipart_uploads().is_empty());
    });
}

#[test]
fn parts_go_up_concurrency_at_once_and_never_more() {
    within(LIMIT, || {
        let bucket = Bucket::new("concurrency");
        let proxy = Proxy::start();
        // Each part waits at the proxy until two are in flight: one at a time never gets there.
        proxy.hold_parts_until_at_once(2);
        let (adapter, _log) = bucket.adapter(json!({ "endpoint": proxy.url, "concurrency": 2 }));
        let archive = data(31 * MIB, 13);
        let mut sink = adapter.begin_backup(SERVER, BACKUP).unwrap();
        write_all(&mut sink, &archive);
        let stored = sink
            .finish(&sha1_hex(&archive), archive.len() as u64)
            .unwrap();
        assert_eq!(stored.parts.len(), 7);
        assert_eq!(proxy.most_parts_at_once(), 2, "parts in flight at once");
        assert!(bucket.get(&key()) == archive);
    });
}

#[test]
fn a_server_that_dies_mid_upload_fails_the_backup_and_leaves_nothing() {
    within(LIMIT, || {
        let bucket = Bucket::new("dies");
        let proxy = Proxy::start();
        let (adapter, log) = bucket.adapter(json!({ "endpoint": proxy.url, "concurrency": 2 }));
        let mut sink = adapter.begin_backup(SERVER, BACKUP).unwrap();
        let archive = data(40 * MIB, 12);
        let mut chunks = archive.chunks(MIB);
        for chunk in chunks.by_ref().take(12) {
            sink.write(chunk).unwrap();
        }
        assert_eq!(bucket.multipart_uploads(), [key()]);

        proxy.set_down(true);
        let err = chunks
            .find_map(|chunk| sink.write(chunk).err())
            .or_else(|| sink.finish("0000", archive.len() as u64).err())
            .expect("the backup fails while the server is down");
        eprintln!("the error: {err}");
        assert_eq!(err.kind, ErrorKind::UNAVAILABLE, "{err}");
        assert!(err.retryable, "{err}");
        assert!(err.message.contains(&key()), "{err}");
        assert!(log.contains("retrying in the background"), "{}", log.dump());

        // The server is back: the abort goes through, nothing is left.
        proxy.set_down(false);
        bucket.wait_for_no_uploads(Duration::from_secs(120));
        assert!(!bucket.exists(&key()));
        let start = std::time::Instant::now();
        while !log.contains("aborted multipart upload in the background") {
            assert!(start.elapsed() < Duration::from_secs(60), "{}", log.dump());
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}

#[test]
fn a_part_size_below_5_mib_is_refused() {
    let bucket = Bucket::without_creating("config");
    let err = instantiate(&bucket.config(json!({ "part_size": MIB })))
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::INVALID_CONFIG);
    assert!(err.message.starts_with("part_size:"), "{err}");
    let err = instantiate(&bucket.config(json!({ "colour": "red" })))
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::INVALID_CONFIG);
    assert!(err.message.contains("colour"), "{err}");
}

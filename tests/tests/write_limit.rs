//! `system.backups.write_limit` holds the bytes an adapter receives to the limit: the
//! fixture adapter logs when each write arrived, and no part of the archive arrived sooner
//! than the limit allows. A slow machine only makes the bytes arrive later, so the check
//! cannot fail for want of speed.

use aerie_e2e::{fixture_library, new_uuid, noise, Node};

const SERVER: &str = "6e2a4c8d-1f3b-4d5e-9a7c-2b4d6f8a0c1e";

/// One MiB, the unit of `write_limit`.
const MIB: u64 = 1024 * 1024;

/// The limit under test, in MiB per second.
const LIMIT_MIB: u64 = 1;

/// The server's data: incompressible, so the archive is as large as it.
const DATA_BYTES: usize = 6 * MIB as usize;

#[test]
fn the_adapter_receives_a_backup_no_faster_than_the_write_limit() {
    let mut node = Node::new();
    let store = node.dir.path().join("fixture-store");
    std::fs::create_dir_all(&store).unwrap();
    node.plugins = Some(format!(
        "adapters:\n  - name: fixture\n    library: {}\n    config:\n      directory: {}\n",
        fixture_library().display(),
        store.display()
    ));
    node.system_extra = format!("  backups:\n    write_limit: {LIMIT_MIB}\n");
    std::fs::write(node.server(SERVER).join("noise"), noise(DATA_BYTES)).unwrap();
    let uuid = new_uuid();
    let log = store.join(format!("{uuid}.writes"));
    std::fs::write(&log, b"").unwrap();
    let daemon = node.start();

    daemon.start_backup(SERVER, "fixture", &uuid, "");
    assert_eq!(daemon.wait_for_end(SERVER, &uuid)["state"], "completed");

    let arrivals: Vec<(f64, u64)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|line| {
            let (nanos, bytes) = line.split_once(' ').expect("`<nanos> <bytes>`");
            (nanos.parse::<f64>().unwrap() / 1e9, bytes.parse().unwrap())
        })
        .collect();
    let rate = (LIMIT_MIB * MIB) as f64;
    let received = arrivals.last().expect("the adapter received bytes").1;
    // Unlimited, the whole archive would arrive at once; it is several seconds of bytes at
    // the limit, so a missing limit shows.
    assert!(received as f64 >= 4.0 * rate, "{received} bytes");
    for (seconds, bytes) in arrivals {
        // What the bucket lets through by then: one second of bytes at once (the burst, as
        // in Wings' juju/ratelimit), then the rate; plus a second of slack.
        let allowed = rate * (2.0 + seconds);
        assert!(
            bytes as f64 <= allowed,
            "{bytes} bytes had arrived {seconds:.2} s into the backup; the limit allows {allowed}"
        );
    }
}

//! The `s3` adapter, loaded from its built library, passes the conformance suite against
//! the test S3 server, with the 1 GiB stream and with the bucket checked for leftover
//! objects and unfinished multipart uploads after every abort. In a test binary of its
//! own: `large_stream` measures the whole process's memory.

// Each test binary uses only part of the shared support.
#[allow(dead_code)]
mod support;

use std::sync::Arc;

use aerie_adapter_api::testkit::{self, Config};
use aerie_s3_test_support::Bucket;
use serde_json::json;
use support::AdapterOn;

#[test]
fn the_s3_adapter_passes_the_conformance_suite() {
    let bucket = Arc::new(Bucket::new("conformance"));
    let mut config = Config::new(bucket.config(json!({})));
    let inspected = bucket.clone();
    config.residue = Some(Box::new(move || {
        let uploads = inspected.multipart_uploads();
        let mut held = inspected.keys();
        held.extend(
            uploads
                .into_iter()
                .map(|key| format!("unfinished upload of {key}")),
        );
        held
    }));
    let report = testkit::run_library(&support::library(), config);
    eprintln!("{report}");
    report.assert_passed();
}

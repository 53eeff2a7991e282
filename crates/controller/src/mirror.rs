//! A standby controller's copy of the leader's images. Controllers that share an etcd store
//! each keep the images of their own host, and the nodes fetch a job's image from the one
//! that leads; a standby copies the leader's store while it stands by, so that the jobs
//! waiting when it takes over find their images there: every [`PERIOD`] it lists the
//! leader's images (`GET /v1/controllers/images`, with a credential of the cluster key's),
//! copies each one it lacks (its config and its squashfs file, each checked against its
//! digest, into place with one rename: [`Store::add_copy`]) and follows the leader's names
//! ([`Store::mirror_names`]: a name the leader removed goes here too, with an image it
//! leaves without one).

use berth_agent::auth::{Key, CONTROLLER};
use berth_agent::runner::ImageSource;
use berth_image::{Digest, ImageRecord, Store};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often a standby looks at the leader's images.
pub const PERIOD: Duration = Duration::from_secs(2);

/// Copies the images of the controller `leader()` names (`http://HOST:PORT`) into the store
/// at `images` until `stop` is set (this controller leads). What goes wrong is logged once
/// until it changes, and tried again at the next look.
pub fn run(
    images: &Path,
    key: &Key,
    mut leader: impl FnMut() -> Option<String>,
    stop: &AtomicBool,
) {
    let mut said = String::new();
    while !stop.load(Ordering::Relaxed) {
        let outcome = match (Store::open(images), leader()) {
            (Err(e), _) => Err(format!("the image store {}: {e}", images.display())),
            (_, None) => Ok(()),
            (Ok(store), Some(url)) => once(&store, key, &url, stop),
        };
        if let Err(e) = outcome {
            if e != said {
                eprintln!("berth: cannot copy the leader's images yet: {e}");
                said = e;
            }
        } else {
            said.clear();
        }
        std::thread::sleep(PERIOD);
    }
}

/// One look at the leader's images: copies what is missing, then follows its names.
fn once(store: &Store, key: &Key, leader: &str, stop: &AtomicBool) -> Result<(), String> {
    let timeout = Duration::from_secs(10);
    let token = key.credential(CONTROLLER);
    let records: Vec<ImageRecord> =
        berth_agent::http::get(leader, "/v1/controllers/images", &token, timeout)?.json()?;
    let mut failed = Vec::new();
    for record in records.iter().filter(|r| !store.has(r.id.hex())) {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Err(e) = copy(store, key, leader, record) {
            failed.push(format!("image {}: {e}", record.id.short()));
        }
    }
    let names: BTreeMap<String, Digest> = records
        .iter()
        .flat_map(|r| r.names.iter().map(|n| (n.clone(), r.id.clone())))
        .collect();
    for gone in store.mirror_names(&names).map_err(|e| e.to_string())? {
        eprintln!(
            "berth: image {} is gone from the leader's store: deleted here too",
            gone.short()
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// Copies one image of the leader's into `store`.
fn copy(store: &Store, key: &Key, leader: &str, record: &ImageRecord) -> Result<(), String> {
    let hex = record.id.hex();
    let answer = berth_agent::http::get(
        leader,
        &format!("/v1/controllers/images/{hex}/config"),
        &key.credential(CONTROLLER),
        Duration::from_secs(10),
    )?;
    if answer.status != 200 {
        return Err(answer.json::<()>().err().unwrap_or_default());
    }
    let sha256 = record
        .squashfs_digest
        .as_ref()
        .map(|d| d.hex().to_string())
        .unwrap_or_default();
    let source = ImageSource {
        path: format!("/v1/controllers/images/{hex}"),
        from: vec![leader.to_string()],
        sha256,
        // Good for the whole transfer of a big file.
        token: key.mint(&berth_agent::auth::Claims {
            user: CONTROLLER.into(),
            uid: 0,
            exp: crate::now() + 3600,
        }),
    };
    store
        .add_copy(record, &answer.body, leader, |dest| {
            berth_agent::runner::fetch_from(leader, &source, dest)
        })
        .map_err(|e| e.to_string())?;
    eprintln!(
        "berth: copied image {} ({}) from the leader {leader}",
        record.id.short(),
        record.names.join(", ")
    );
    Ok(())
}

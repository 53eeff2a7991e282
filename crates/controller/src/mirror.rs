//! A standby controller's copy of the leader's images. Controllers that share an etcd store
//! each keep the images of their own host, and the nodes fetch a job's image from the one
//! that leads; a standby copies the leader's store while it stands by, so that the jobs
//! waiting when it takes over find their images there.
//!
//! A standby looks at the leader's images (`POST /v1/controllers/images`, with a credential
//! of the cluster key's: a [`Look`], saying what it has), copies each one it lacks (its config
//! and its squashfs file, each checked against its digest, into place with one rename:
//! [`Store::add_copy`]), follows the leader's names ([`Store::mirror_names`]: a name the
//! leader removed goes here too, with an image it leaves without one), and looks again at
//! once. The leader holds a look whose standby has copied its listing whole until its images
//! change ([`Standbys::changed`]) or [`HOLD`] has passed; it answers an import or a pull once
//! every standby it hears from has copied the image, or said why it could not
//! ([`Standbys::copied`]): an image the leader took in is on the standbys before its user
//! hears it is there, and a failover right after loses none.

use berth_agent::auth::{Key, CONTROLLER};
use berth_agent::runner::ImageSource;
use berth_image::{Digest, ImageRecord, Store};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long a standby waits before it looks again after a look that went wrong (the
/// leader out of reach, a copy that failed), and with no leader.
pub const PERIOD: Duration = Duration::from_secs(2);

/// How long the leader holds a look at images that have not changed.
pub const HOLD: Duration = Duration::from_secs(10);

/// A standby's look at the leader's images (`POST /v1/controllers/images`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Look {
    /// Who looks: its host and the address it would lead at (as in `/berth/leader`).
    pub standby: String,
    /// The leader's listing it has copied whole ([`Listing::version`]), if any.
    #[serde(default)]
    pub copied: Option<String>,
    /// Seconds the leader may hold the answer while `copied` is still its listing.
    #[serde(default)]
    pub wait: u64,
    /// The ids (hex) of the images in its store.
    #[serde(default)]
    pub have: BTreeSet<String>,
    /// Images of the leader's it could not copy (hex id), with why.
    #[serde(default)]
    pub failed: BTreeMap<String, String>,
}

/// The leader's answer to a [`Look`]: its images, each with its squashfs file's digest.
#[derive(Debug, Serialize, Deserialize)]
pub struct Listing {
    /// Tells this listing from any other of the same leader's.
    pub version: String,
    pub images: Vec<ImageRecord>,
    /// The names removed from the cluster's store in the last weeks, with when (seconds
    /// since the epoch): a standby that led before drops those it took in itself earlier.
    #[serde(default)]
    pub removed: BTreeMap<String, u64>,
}

impl Listing {
    /// The listing of `images`, but for those without a name: one being imported, whose
    /// name comes right after it (a standby that copied it then would say it holds it
    /// before it has the name: an import answers only once the standbys have both), or
    /// one whose last name went (no job can name it).
    pub fn of(mut images: Vec<ImageRecord>) -> Listing {
        use std::hash::{Hash, Hasher};
        images.retain(|r| !r.names.is_empty());
        let mut hasher = std::hash::DefaultHasher::new();
        serde_json::to_vec(&images)
            .expect("records serialise")
            .hash(&mut hasher);
        Listing {
            version: format!("{:016x}", hasher.finish()),
            images,
            removed: BTreeMap::new(),
        }
    }
}

/// Copies the images of the controller `leader()` names (`https://HOST:PORT`) into the store
/// at `images` until `stop` is set (this controller leads); `standby` is who this one is
/// ([`Look::standby`]). What goes wrong is logged once until it changes, told to the leader,
/// and tried again [`PERIOD`] later.
pub fn run(
    images: &Path,
    key: &Key,
    standby: &str,
    mut leader: impl FnMut() -> Option<String>,
    stop: &AtomicBool,
) {
    let mut said = String::new();
    let mut look = Look {
        standby: standby.to_string(),
        wait: HOLD.as_secs(),
        ..Look::default()
    };
    let mut following = None;
    while !stop.load(Ordering::Relaxed) {
        let outcome = match (Store::open(images), leader()) {
            (Err(e), _) => Err(format!("the image store {}: {e}", images.display())),
            (_, None) => Err(String::new()),
            (Ok(store), Some(url)) => {
                if following.as_ref() != Some(&url) {
                    look.copied = None;
                    following = Some(url.clone());
                }
                once(&store, key, &url, &mut look, stop)
            }
        };
        match outcome {
            Ok(()) => said.clear(),
            Err(e) => {
                if e != said && !e.is_empty() {
                    berth_core::say!("berth: cannot copy the leader's images yet: {e}");
                }
                said = e;
                look.copied = None;
                std::thread::sleep(PERIOD);
            }
        }
    }
}

/// One look at the leader's images: copies what is missing, then follows its names; `look`
/// then says what this store holds.
fn once(
    store: &Store,
    key: &Key,
    leader: &str,
    look: &mut Look,
    stop: &AtomicBool,
) -> Result<(), String> {
    look.have = store
        .list()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| r.id.hex().to_string())
        .collect();
    let timeout = Duration::from_secs(look.wait) + Duration::from_secs(10);
    let listing: Listing = berth_agent::http::post(
        leader,
        "/v1/controllers/images",
        (key, CONTROLLER),
        look,
        timeout,
    )?;
    look.failed.clear();
    for record in listing.images.iter().filter(|r| !store.has(r.id.hex())) {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Err(e) = copy(store, key, leader, record) {
            look.failed.insert(record.id.hex().to_string(), e);
        }
    }
    let names: BTreeMap<String, Digest> = listing
        .images
        .iter()
        .flat_map(|r| r.names.iter().map(|n| (n.clone(), r.id.clone())))
        .collect();
    let gone = store
        .mirror_names(&names, &listing.removed)
        .map_err(|e| e.to_string())?;
    for gone in gone {
        berth_core::say!(
            "berth: image {} is gone from the leader's store: deleted here too",
            gone.short()
        );
    }
    if look.failed.is_empty() {
        look.copied = Some(listing.version);
        return Ok(());
    }
    let failed: Vec<String> = look
        .failed
        .iter()
        .map(|(hex, e)| format!("image {}: {e}", &hex[..12.min(hex.len())]))
        .collect();
    Err(failed.join("; "))
}

/// Copies one image of the leader's into `store`.
fn copy(store: &Store, key: &Key, leader: &str, record: &ImageRecord) -> Result<(), String> {
    let hex = record.id.hex();
    let answer = berth_agent::http::get(
        leader,
        &format!("/v1/controllers/images/{hex}/config"),
        (key, CONTROLLER),
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
        peers: Vec::new(),
        sha256,
        // Good for the whole transfer of a big file.
        token: key.mint(&berth_agent::auth::Claims {
            user: CONTROLLER.into(),
            uid: 0,
            exp: crate::now() + 3600,
            tls: None,
        }),
        tls: key.tls().fingerprint.clone(),
    };
    store
        .add_copy(record, &answer.body, leader, |dest| {
            berth_agent::runner::fetch_from(leader, &source, dest)
        })
        .map_err(|e| e.to_string())?;
    berth_core::say!(
        "berth: copied image {} ({}) from the leader {leader}",
        record.id.short(),
        record.names.join(", ")
    );
    Ok(())
}

/// How long after its last look a standby counts as following the leader (it fetches what
/// the look's answer listed): an import waits for it meanwhile.
const GRACE: Duration = Duration::from_secs(5);

/// How long a standby not heard from is warned of, at imports, as without their copies.
const WARN_FOR: Duration = Duration::from_secs(60);

/// How long the leader remembers a standby it no longer hears from (shown as down).
const FORGET: Duration = Duration::from_secs(3600);

/// The leader's side: the standbys that look at its images, and what each holds.
#[derive(Default)]
pub struct Standbys {
    known: Mutex<Known>,
    /// The leader's images changed (an import, a pull, a removal): held looks answer.
    changed: Notify,
    /// A standby looked: imports waiting for their copies look again.
    heard: Notify,
}

#[derive(Default)]
struct Known {
    standbys: BTreeMap<String, Standby>,
    /// Copies of an image's file under way (hex id), by any standby.
    fetching: BTreeMap<String, usize>,
    /// When the last of them ended (the standby looks again next).
    fetched: Option<Instant>,
}

struct Standby {
    last: Instant,
    /// Its looks held now.
    looking: usize,
    have: BTreeSet<String>,
    failed: BTreeMap<String, String>,
}

impl Standbys {
    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The leader's images changed: every look held is answered.
    pub fn changed(&self) {
        self.changed.notify_waiters();
    }

    /// A standby's look arrived: what it says is kept until its next; the standby counts
    /// as looking while the guard lives.
    pub fn look(self: &Arc<Self>, look: &Look) -> Looking {
        let now = Instant::now();
        let mut known = self.known();
        known
            .standbys
            .retain(|_, s| s.looking > 0 || now.duration_since(s.last) < FORGET);
        let standby = known
            .standbys
            .entry(look.standby.clone())
            .or_insert(Standby {
                last: now,
                looking: 0,
                have: BTreeSet::new(),
                failed: BTreeMap::new(),
            });
        standby.last = now;
        standby.looking += 1;
        standby.have = look.have.clone();
        standby.failed = look.failed.clone();
        drop(known);
        self.heard.notify_waiters();
        Looking {
            standbys: self.clone(),
            standby: look.standby.clone(),
        }
    }

    /// Told of each change of the leader's images ([`Standbys::changed`]): a held look
    /// asks for it before it lists them, and waits on it (and looks again every second all
    /// the same, for changes the leader took no part in: a root's import into its store by
    /// hand).
    pub fn changes(&self) -> &Notify {
        &self.changed
    }

    /// A standby copies the file of the image `hex` while the guard lives.
    pub fn fetch(self: &Arc<Self>, hex: &str) -> Fetching {
        *self.known().fetching.entry(hex.to_string()).or_default() += 1;
        Fetching {
            standbys: self.clone(),
            hex: hex.to_string(),
        }
    }

    /// Waits until every standby the leader hears from holds the image `hex` (or said why
    /// it cannot), for up to `limit`; what is missing then, as warnings for the user.
    pub async fn copied(&self, hex: &str, limit: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let heard = self.heard.notified();
            tokio::pin!(heard);
            heard.as_mut().enable();
            let (waiting, mut warnings) = self.lacking(hex, Instant::now());
            if waiting.is_empty() {
                return warnings;
            }
            if tokio::time::Instant::now() >= deadline {
                warnings.extend(waiting.iter().map(|who| {
                    format!(
                        "the standby controller {who} has not copied it after {} s: it copies it still, but a failover before it has would leave the jobs that use it held",
                        limit.as_secs()
                    )
                }));
                return warnings;
            }
            let again = tokio::time::Instant::now() + Duration::from_secs(1);
            let _ = tokio::time::timeout_at(deadline.min(again), heard).await;
        }
    }

    /// The standbys that lack the image `hex` and still follow the leader (looking, just
    /// answered, or copying it), and warnings for those that lack it and do not.
    fn lacking(&self, hex: &str, now: Instant) -> (Vec<String>, Vec<String>) {
        let known = self.known();
        let fetching = known.fetching.get(hex).is_some_and(|n| *n > 0)
            || known.fetched.is_some_and(|t| now.duration_since(t) < GRACE);
        let mut waiting = Vec::new();
        let mut warnings = Vec::new();
        for (who, s) in known.standbys.iter().filter(|(_, s)| !s.have.contains(hex)) {
            if now.duration_since(s.last) >= WARN_FOR && s.looking == 0 {
                continue;
            }
            if let Some(e) = s.failed.get(hex) {
                warnings.push(format!(
                    "the standby controller {who} could not copy it: {e}"
                ));
            } else if s.looking > 0 || fetching || now.duration_since(s.last) < GRACE {
                waiting.push(who.clone());
            } else {
                warnings.push(format!(
                    "the standby controller {who} has not looked at this controller's images for {} s: it has no copy",
                    now.duration_since(s.last).as_secs()
                ));
            }
        }
        (waiting, warnings)
    }
}

impl Standbys {
    /// Each standby the leader heard from in the last [`FORGET`], as `berth controllers`
    /// shows it: up while it looks or has just looked, and how many of `images` (the
    /// leader's, by id) it holds.
    pub fn report(&self, images: &BTreeSet<String>) -> Vec<berth_api::ControllerInfo> {
        let now = Instant::now();
        self.known()
            .standbys
            .iter()
            .map(|(who, s)| {
                let heard = match s.looking {
                    0 => now.duration_since(s.last),
                    _ => Duration::ZERO,
                };
                let (host, url) = match who.split_once(' ') {
                    Some((host, url)) if url.starts_with("https://") => (host, Some(url)),
                    _ => (who.as_str(), None),
                };
                berth_api::ControllerInfo {
                    host: host.to_string(),
                    url: url.map(String::from),
                    role: "standby".into(),
                    state: if heard < HOLD + GRACE { "up" } else { "down" }.into(),
                    heard: Some(heard.as_secs()),
                    images: images.iter().filter(|i| s.have.contains(*i)).count() as u64,
                    failed: s
                        .failed
                        .iter()
                        .map(|(hex, e)| format!("{}: {e}", &hex[..12.min(hex.len())]))
                        .collect(),
                }
            })
            .collect()
    }
}

/// A standby's look held by the leader ([`Standbys::look`]).
pub struct Looking {
    standbys: Arc<Standbys>,
    standby: String,
}

impl Drop for Looking {
    fn drop(&mut self) {
        if let Some(s) = self.standbys.known().standbys.get_mut(&self.standby) {
            s.looking -= 1;
            s.last = Instant::now();
        }
    }
}

/// A standby's copy of an image's file under way ([`Standbys::fetch`]).
pub struct Fetching {
    standbys: Arc<Standbys>,
    hex: String,
}

impl Drop for Fetching {
    fn drop(&mut self) {
        let mut known = self.standbys.known();
        if let Some(n) = known.fetching.get_mut(&self.hex) {
            *n -= 1;
            if *n == 0 {
                known.fetching.remove(&self.hex);
            }
        }
        known.fetched = Some(Instant::now());
        drop(known);
        self.standbys.heard.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(standby: &str, have: &[&str], failed: &[(&str, &str)]) -> Look {
        Look {
            standby: standby.into(),
            have: have.iter().map(|h| h.to_string()).collect(),
            failed: failed
                .iter()
                .map(|(h, e)| (h.to_string(), e.to_string()))
                .collect(),
            ..Look::default()
        }
    }

    #[test]
    fn an_import_waits_for_the_standbys_that_follow_and_lack_its_image() {
        let standbys = Arc::new(Standbys::default());
        // Nobody looks: nothing to wait for.
        assert_eq!(standbys.lacking("aa", Instant::now()), (vec![], vec![]));
        // One looking without it, one with it, one that could not copy it.
        let _a = standbys.look(&look("a", &["bb"], &[]));
        drop(standbys.look(&look("b", &["aa"], &[])));
        drop(standbys.look(&look("c", &[], &[("aa", "no room")])));
        let (waiting, warnings) = standbys.lacking("aa", Instant::now());
        assert_eq!(waiting, ["a"]);
        assert_eq!(
            warnings,
            ["the standby controller c could not copy it: no room"]
        );
        // Answered a moment ago, a standby is still followed (it copies what it was told).
        drop(standbys.look(&look("d", &[], &[])));
        assert_eq!(standbys.lacking("aa", Instant::now()).0, ["a", "d"]);
        // Long after its last look, it is not waited for, and said so.
        let later = Instant::now() + GRACE + Duration::from_secs(1);
        let (waiting, warnings) = standbys.lacking("aa", later);
        assert_eq!(waiting, ["a"]);
        assert!(
            warnings[1].starts_with("the standby controller d has not looked"),
            "{warnings:?}"
        );
        // Unless a standby copies that image's file just then.
        let fetching = standbys.fetch("aa");
        assert_eq!(standbys.lacking("aa", later).0, ["a", "d"]);
        drop(fetching);
        assert_eq!(standbys.lacking("zz", later + GRACE).0, ["a"]);
    }

    #[test]
    fn a_wait_for_copies_ends_when_the_standby_says_it_has_the_image_or_in_time() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let standbys = Arc::new(Standbys::default());
            let looking = standbys.look(&look("a", &[], &[]));
            // The standby's next look says it has it.
            let told = {
                let standbys = standbys.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    drop(looking);
                    standbys.look(&look("a", &["aa"], &[]))
                })
            };
            assert!(standbys
                .copied("aa", Duration::from_secs(30))
                .await
                .is_empty());
            let _looking = told.await.unwrap();
            // One that never does: the wait ends in time, with a warning.
            let warnings = standbys.copied("bb", Duration::from_millis(100)).await;
            assert_eq!(warnings.len(), 1);
            assert!(warnings[0].starts_with("the standby controller a has not copied it"));
        });
    }

    #[test]
    fn a_listing_has_one_version_per_content() {
        let record = |name: &str| ImageRecord {
            names: vec![name.to_string()],
            ..serde_json::from_value(serde_json::json!({
                "id": format!("sha256:{}", "a".repeat(64)),
                "source": "x", "imported": 0, "size": 1, "layers": 1,
                "architecture": "amd64", "config": {},
            }))
            .unwrap()
        };
        let a = Listing::of(vec![record("x:1")]);
        assert_eq!(a.version, Listing::of(vec![record("x:1")]).version);
        assert_ne!(a.version, Listing::of(vec![record("x:2")]).version);
        assert_ne!(a.version, Listing::of(vec![]).version);
        // An image without a name (one being imported) is not listed yet.
        let nameless = ImageRecord {
            names: Vec::new(),
            ..record("x:1")
        };
        assert!(Listing::of(vec![nameless]).images.is_empty());
    }
}

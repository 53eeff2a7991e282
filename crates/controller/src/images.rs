//! The cluster's images: the controller's store, which jobs run from, listed for users and
//! filled from registries on their request (`POST /v1/images/pull`), as Shifter's image
//! gateway pulls and converts images for its users: the controller pulls (its own
//! credentials, the administrator's registry settings), flattens into one squashfs file, and
//! the nodes fetch that file from it. Users may pull what `[registry] user_pulls` allows.
//! They may also upload image files of their own (`POST /v1/images/import`: a
//! docker-archive, OCI archive, root filesystem tarball, enroot's squashfs or a SIF file),
//! named under `users/THEIR-NAME/` so that nobody's upload takes another's name.
//!
//! What is under `users/USER/` is that user's alone: only their jobs run it and only they
//! (and root) see it, unless they share it with other users or groups (`berth image share`,
//! as Shifter's image ACLs): [`Viewer`].
//!
//! Runs on a blocking thread, without the controller's lock: a pull takes as long as the
//! registry does. The store makes concurrent pulls of one image one good copy.

use crate::{ApiError, Caller, Settings};
use berth_api::ImageInfo;
use berth_image::{ImageRecord, ImportOptions, PullReference, Reference, RegistryOptions, Store};
use std::path::PathBuf;

/// What a list or a pull needs of the controller's settings and state.
pub struct Gateway {
    store: PathBuf,
    registry: berth_core::RegistryConfig,
    auth_file: Option<PathBuf>,
    shares: Shares,
}

/// The private names shared with others, by name (kept in the controller's store under
/// `image-shares/`).
pub type Shares = std::collections::BTreeMap<String, berth_api::ImageShare>;

impl Gateway {
    pub fn of(settings: &Settings, shares: Shares) -> Gateway {
        Gateway {
            store: settings.image_store.clone(),
            registry: settings.registry.clone(),
            auth_file: settings.registry_auth_file.clone(),
            shares,
        }
    }

    fn open(&self) -> Result<Store, ApiError> {
        Store::open(&self.store).map_err(ApiError::internal)
    }

    /// The images in the cluster's store that `user` may run ([`Viewer::sees`]), by name.
    pub fn list(&self, user: &str) -> Result<Vec<ImageInfo>, ApiError> {
        let viewer = Viewer::new(user, &self.shares);
        let mut images: Vec<ImageInfo> = self
            .open()?
            .list()
            .map_err(ApiError::internal)?
            .iter()
            .filter(|r| viewer.sees(r))
            .map(|r| info(r, &viewer))
            .collect();
        images.sort_by(|a, b| a.names.cmp(&b.names).then(a.id.cmp(&b.id)));
        Ok(images)
    }

    /// Pulls `reference` into the cluster's store for `caller`: root any image, users those
    /// the administrator allows, with `credentials` (the caller's own for the registry) or
    /// the controller's. A user's `private` pull (with their own credentials, or anonymous)
    /// is theirs alone: named `users/USER/HOST[-PORT]/REPO:TAG` ([`under_user`],
    /// [`Viewer`]), root's too; other pulls are everyone's, and none is named under
    /// `users/` (whose names are private).
    pub fn pull(
        &self,
        caller: Caller,
        reference: &str,
        credentials: Option<berth_api::RegistryCredentials>,
        private: bool,
    ) -> Result<ImageInfo, ApiError> {
        let target = PullReference::parse(reference).map_err(|e| ApiError::bad(e.to_string()))?;
        let name = target.name();
        let user = crate::user_of(caller.uid)?.user;
        if caller.uid != 0 {
            // (By the name as it is kept, or with its registry written out.)
            self.registry
                .allows_user_pull(&name)
                .or_else(|e| {
                    self.registry
                        .allows_user_pull(&target.qualified())
                        .map_err(|_| e)
                })
                .map_err(ApiError::forbidden)?;
        }
        let public = Reference::parse(&name).map_err(|e| ApiError::bad(e.to_string()))?;
        if !private && public.repository.starts_with("users/") {
            return Err(ApiError::forbidden(format!(
                "{name}: names under users/ are users' private images: pull it with --private (it is then users/{user}/...), or from a registry that names it otherwise"
            )));
        }
        let own = private
            .then(|| under_user(&user, &public, "pull"))
            .transpose()?;
        let options = RegistryOptions {
            ca_certs: self.registry.ca_certs.clone(),
            insecure: self.registry.insecure.clone(),
            creds: credentials.map(|c| (c.username, c.password)),
            // A private pull is the caller's: never with the controller's own credentials.
            auth_file: self.auth_file.clone().filter(|_| !private),
        };
        let record = self
            .open()?
            .pull_as(reference, own.as_deref(), &options)
            .map_err(|e| ApiError {
                status: 502,
                message: format!("the controller could not pull {reference}: {e}"),
            })?;
        berth_core::say!(
            "berth: uid {} pulled {} into the cluster's store (id {})",
            caller.uid,
            own.as_deref().unwrap_or(&name),
            record.id.short()
        );
        let mut image = info(&record, &Viewer::new(&user, &self.shares));
        // The name just pulled first (the image may have had others).
        let pulled = own.unwrap_or(name);
        image.names.retain(|n| *n != pulled);
        image.names.insert(0, pulled);
        Ok(image)
    }
}

/// `name` under `user`'s own `users/USER/` (their uploads and private pulls): a registry's
/// host lower-cased, its port joined to it by '-' (no ':' is inside a name there).
fn under_user(user: &str, name: &Reference, what: &str) -> Result<String, ApiError> {
    let repository = match name.repository.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => {
            format!("{}/{rest}", host.to_lowercase().replace(':', "-"))
        }
        _ => name.repository.clone(),
    };
    Reference::parse(&format!("users/{user}/{repository}{}", name.suffix()))
        .map(|r| r.to_string())
        .map_err(|_| {
            ApiError::forbidden(format!(
                "your user name ({user}) cannot be part of an image name (lower-case letters, digits, '.', '_' and '-'): ask an administrator to {what} it"
            ))
        })
}

/// A user looking at the cluster's images: which they see, and their jobs may run.
pub struct Viewer<'a> {
    user: &'a str,
    shares: &'a Shares,
    /// The groups `user` is in, looked up the first time a shared name needs them.
    groups: std::cell::OnceCell<Vec<String>>,
}

impl<'a> Viewer<'a> {
    pub fn new(user: &'a str, shares: &'a Shares) -> Viewer<'a> {
        Viewer {
            user,
            shares,
            groups: std::cell::OnceCell::new(),
        }
    }

    /// The names of the groups the user is in, primary and supplementary (none if the user
    /// database does not know them).
    fn groups(&self) -> &[String] {
        self.groups.get_or_init(|| {
            berth_runtime::Identity::lookup(self.user, true)
                .map(|id| {
                    let mut groups = id.group_names;
                    groups.push(id.group);
                    groups.sort();
                    groups.dedup();
                    groups
                })
                .unwrap_or_default()
        })
    }

    /// Whether the name `name` is the user's: root's any, a user's those under their own
    /// `users/USER/` (their uploads and what they pulled with their own credentials).
    pub fn owns(&self, name: &str) -> bool {
        self.user == "root"
            || name
                .strip_prefix("users/")
                .and_then(|n| n.strip_prefix(self.user))
                .is_some_and(|n| n.starts_with('/'))
    }

    /// Whether the user sees the image name `name`: one outside `users/`, their own, or one
    /// shared with them or a group of theirs.
    pub fn sees_name(&self, name: &str) -> bool {
        !name.starts_with("users/")
            || self.owns(name)
            || self.shares.get(name).is_some_and(|share| {
                share.users.iter().any(|u| u == self.user)
                    || share.groups.iter().any(|g| self.groups().contains(g))
            })
    }

    /// Whether the user's jobs may run the image `record` (and the user sees it): root's
    /// any, a user's one with a name they see.
    pub fn sees(&self, record: &ImageRecord) -> bool {
        self.user == "root" || record.names.iter().any(|n| self.sees_name(n))
    }
}

impl Gateway {
    /// The name `caller`'s upload gets for the `name` they asked for: root's as asked,
    /// a user's under `users/USER/` (where users may upload at all).
    pub fn upload_name(&self, caller: Caller, name: &str) -> Result<String, ApiError> {
        let asked = Reference::parse(name).map_err(|e| ApiError::bad(e.to_string()))?;
        if caller.uid == 0 {
            return Ok(asked.to_string());
        }
        if !self.registry.user_imports {
            return Err(ApiError::forbidden(
                "users may not upload images into the cluster ([registry] user_imports = false in the configuration): ask an administrator to import it",
            ));
        }
        under_user(&crate::user_of(caller.uid)?.user, &asked, "import")
    }

    /// Imports the image file `input` (an upload of `caller`'s, named `file` where it came
    /// from) as `name` (from [`Gateway::upload_name`]).
    pub fn import(
        &self,
        caller: Caller,
        name: String,
        file: &str,
        input: impl std::io::Read,
    ) -> Result<ImageInfo, ApiError> {
        let origin = format!("{file} (uploaded by uid {})", caller.uid);
        let options = ImportOptions {
            name: Some(name.clone()),
        };
        let record = self
            .open()?
            .import_upload(input, file, &origin, &options)
            .map_err(|e| ApiError::bad(format!("the controller could not import it: {e}")))?;
        berth_core::say!(
            "berth: uid {} uploaded {name} into the cluster's store (id {})",
            caller.uid,
            record.id.short()
        );
        let user = crate::user_of(caller.uid)?.user;
        Ok(info(&record, &Viewer::new(&user, &self.shares)))
    }
}

impl Gateway {
    /// Every image in the cluster's store as the store records it, each with its squashfs
    /// file's digest: what a standby controller copies ([`crate::mirror`]).
    pub fn records(&self) -> Result<Vec<ImageRecord>, ApiError> {
        let store = self.open()?;
        store
            .list()
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|record| {
                let digest = store.squashfs_digest(&record).map_err(ApiError::internal)?;
                Ok(ImageRecord {
                    squashfs_digest: Some(digest),
                    ..record
                })
            })
            .collect()
    }

    /// The OCI config of the image whose id is `hex`, byte for byte.
    pub fn config(&self, hex: &str) -> Result<Vec<u8>, ApiError> {
        let store = self.open()?;
        let record = by_id(&store, hex)?;
        store.config_json(&record).map_err(ApiError::internal)
    }
}

/// The image whose id is `hex` (64 hex digits: no name, no prefix).
pub fn by_id(store: &Store, hex: &str) -> Result<ImageRecord, ApiError> {
    store.by_id(hex).map_err(|_| ApiError {
        status: 404,
        message: format!("no image {hex} here"),
    })
}

/// `r` as `viewer` is shown it: the names they see, and whom those they own are shared with.
fn info(r: &ImageRecord, viewer: &Viewer) -> ImageInfo {
    let names: Vec<String> = r
        .names
        .iter()
        .filter(|n| viewer.sees_name(n))
        .cloned()
        .collect();
    let shares = names
        .iter()
        .filter(|n| viewer.owns(n))
        .filter_map(|n| viewer.shares.get(n).cloned())
        .collect();
    ImageInfo {
        id: r.id.to_string(),
        names,
        size: r.size,
        imported: r.imported,
        architecture: r.architecture.clone(),
        shares,
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_names_are_theirs_alone() {
        let named = |names: &[&str]| ImageRecord {
            names: names.iter().map(|n| n.to_string()).collect(),
            ..record()
        };
        let public = named(&["busybox:latest", "users/alice/tools:1"]);
        let alices = named(&["users/alice/tools:1"]);
        let unnamed = named(&[]);
        let none = Shares::new();
        let visible = |record: &ImageRecord, user: &str| Viewer::new(user, &none).sees(record);
        assert!(visible(&public, "bob") && visible(&alices, "alice"));
        // Another user's, a user whose name begins like it, an image without a name.
        assert!(!visible(&alices, "bob") && !visible(&alices, "ali"));
        assert!(!visible(&unnamed, "alice"));
        assert!(visible(&alices, "root") && visible(&unnamed, "root"));
        // Others' names are left out of what a user is shown.
        assert_eq!(
            info(&public, &Viewer::new("bob", &none)).names,
            ["busybox:latest"]
        );
        assert_eq!(info(&public, &Viewer::new("alice", &none)).names.len(), 2);

        let under = |user: &str, name: &str| {
            under_user(user, &Reference::parse(name).unwrap(), "pull").map_err(|e| e.message)
        };
        assert_eq!(
            under("alice", "Registry.Local:5000/lab/app:1").unwrap(),
            "users/alice/registry.local-5000/lab/app:1"
        );
        assert_eq!(
            under("alice", "lab/app").unwrap(),
            "users/alice/lab/app:latest"
        );
        assert!(under("Alice", "lab/app")
            .unwrap_err()
            .contains("your user name (Alice) cannot be part of an image name"));
    }

    #[test]
    fn shared_names_are_seen_by_the_users_and_groups_they_are_shared_with() {
        let share = |users: &[&str], groups: &[&str]| {
            let name = "users/alice/tools:1".to_string();
            let share = berth_api::ImageShare {
                name: name.clone(),
                users: users.iter().map(|u| u.to_string()).collect(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
            };
            Shares::from([(name, share)])
        };
        let with_bob = share(&["bob"], &[]);
        let bob = Viewer::new("bob", &with_bob);
        assert!(bob.sees_name("users/alice/tools:1") && !bob.owns("users/alice/tools:1"));
        // Only that name: not alice's others.
        assert!(!bob.sees_name("users/alice/tools:2"));
        assert!(!Viewer::new("carol", &with_bob).sees_name("users/alice/tools:1"));
        // A group's members: nobody's primary group is nogroup (Debian's user database).
        let with_group = share(&[], &["nogroup"]);
        assert!(Viewer::new("nobody", &with_group).sees_name("users/alice/tools:1"));
        assert!(!Viewer::new("bob", &with_group).sees_name("users/alice/tools:1"));
        // The owner and root are shown whom a name is shared with; others are not.
        let record = ImageRecord {
            names: vec!["users/alice/tools:1".into()],
            ..record()
        };
        assert_eq!(
            info(&record, &Viewer::new("alice", &with_bob)).shares.len(),
            1
        );
        assert_eq!(
            info(&record, &Viewer::new("root", &with_bob)).shares.len(),
            1
        );
        assert!(info(&record, &bob).shares.is_empty());
    }

    fn record() -> ImageRecord {
        ImageRecord {
            id: berth_image::Digest::of(b"config"),
            names: Vec::new(),
            source: String::new(),
            imported: 0,
            size: 0,
            layers: 1,
            architecture: "amd64".into(),
            config: Default::default(),
            devices_dropped: 0,
            squashfs_digest: None,
        }
    }
}

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
//! (and root) see it ([`visible`]).
//!
//! Runs on a blocking thread, without the controller's lock: a pull takes as long as the
//! registry does. The store makes concurrent pulls of one image one good copy.

use crate::{ApiError, Caller, Settings};
use berth_api::ImageInfo;
use berth_image::{ImageRecord, ImportOptions, PullReference, Reference, RegistryOptions, Store};
use std::path::PathBuf;

/// What a list or a pull needs of the controller's settings.
pub struct Gateway {
    store: PathBuf,
    registry: berth_core::RegistryConfig,
    auth_file: Option<PathBuf>,
}

impl Gateway {
    pub fn of(settings: &Settings) -> Gateway {
        Gateway {
            store: settings.image_store.clone(),
            registry: settings.registry.clone(),
            auth_file: settings.registry_auth_file.clone(),
        }
    }

    fn open(&self) -> Result<Store, ApiError> {
        Store::open(&self.store).map_err(ApiError::internal)
    }

    /// The images in the cluster's store that `user` may run ([`visible`]), by name.
    pub fn list(&self, user: &str) -> Result<Vec<ImageInfo>, ApiError> {
        let mut images: Vec<ImageInfo> = self
            .open()?
            .list()
            .map_err(ApiError::internal)?
            .iter()
            .filter(|r| visible(r, user))
            .map(|r| info(r, user))
            .collect();
        images.sort_by(|a, b| a.names.cmp(&b.names).then(a.id.cmp(&b.id)));
        Ok(images)
    }

    /// Pulls `reference` into the cluster's store for `caller`: root any image, users those
    /// the administrator allows. With `credentials` (the caller's own for the registry), a
    /// user's pull is theirs alone: named `users/USER/HOST[-PORT]/REPO:TAG` ([`under_user`],
    /// [`visible`]).
    pub fn pull(
        &self,
        caller: Caller,
        reference: &str,
        credentials: Option<berth_api::RegistryCredentials>,
    ) -> Result<ImageInfo, ApiError> {
        let target = PullReference::parse(reference).map_err(|e| ApiError::bad(e.to_string()))?;
        let name = target.name();
        let user = crate::user_of(caller.uid)?.user;
        let private = match caller.uid {
            0 => None,
            _ => {
                self.registry
                    .allows_user_pull(&name)
                    .map_err(ApiError::forbidden)?;
                let public = Reference::parse(&name).map_err(|e| ApiError::bad(e.to_string()))?;
                credentials
                    .as_ref()
                    .map(|_| under_user(&user, &public, "pull"))
                    .transpose()?
            }
        };
        let options = RegistryOptions {
            ca_certs: self.registry.ca_certs.clone(),
            insecure: self.registry.insecure.clone(),
            creds: credentials.map(|c| (c.username, c.password)),
            auth_file: self.auth_file.clone(),
        };
        let record = self
            .open()?
            .pull_as(reference, private.as_deref(), &options)
            .map_err(|e| ApiError {
                status: 502,
                message: format!("the controller could not pull {reference}: {e}"),
            })?;
        eprintln!(
            "berth: uid {} pulled {} into the cluster's store (id {})",
            caller.uid,
            private.as_deref().unwrap_or(&name),
            record.id.short()
        );
        let mut image = info(&record, &user);
        // The name just pulled first (the image may have had others).
        let pulled = private.unwrap_or(name);
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
    Reference::parse(&format!("users/{user}/{repository}:{}", name.tag))
        .map(|r| r.to_string())
        .map_err(|_| {
            ApiError::forbidden(format!(
                "your user name ({user}) cannot be part of an image name (lower-case letters, digits, '.', '_' and '-'): ask an administrator to {what} it"
            ))
        })
}

/// Whether `user`'s jobs may run the image `record` (and `user` sees it): root's any; a
/// user's an image with a name outside `users/`, or one under their own `users/USER/`
/// (their uploads and what they pulled with their own credentials are theirs alone).
pub fn visible(record: &ImageRecord, user: &str) -> bool {
    user == "root" || record.names.iter().any(|n| name_visible(n, user))
}

/// Whether `user` sees the image name `name` ([`visible`]).
fn name_visible(name: &str, user: &str) -> bool {
    user == "root"
        || !name.starts_with("users/")
        || name
            .strip_prefix("users/")
            .and_then(|n| n.strip_prefix(user))
            .is_some_and(|n| n.starts_with('/'))
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
        eprintln!(
            "berth: uid {} uploaded {name} into the cluster's store (id {})",
            caller.uid,
            record.id.short()
        );
        Ok(info(&record, &crate::user_of(caller.uid)?.user))
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

/// `r` as `user` is shown it: the names they see.
fn info(r: &ImageRecord, user: &str) -> ImageInfo {
    ImageInfo {
        id: r.id.to_string(),
        names: r
            .names
            .iter()
            .filter(|n| name_visible(n, user))
            .cloned()
            .collect(),
        size: r.size,
        imported: r.imported,
        architecture: r.architecture.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_names_are_theirs_alone() {
        let named = |names: &[&str]| ImageRecord {
            id: berth_image::Digest::of(b"config"),
            names: names.iter().map(|n| n.to_string()).collect(),
            source: String::new(),
            imported: 0,
            size: 0,
            layers: 1,
            architecture: "amd64".into(),
            config: Default::default(),
            devices_dropped: 0,
            squashfs_digest: None,
        };
        let public = named(&["busybox:latest", "users/alice/tools:1"]);
        let alices = named(&["users/alice/tools:1"]);
        let unnamed = named(&[]);
        assert!(visible(&public, "bob") && visible(&alices, "alice"));
        // Another user's, a user whose name begins like it, an image without a name.
        assert!(!visible(&alices, "bob") && !visible(&alices, "ali"));
        assert!(!visible(&unnamed, "alice"));
        assert!(visible(&alices, "root") && visible(&unnamed, "root"));
        // Others' names are left out of what a user is shown.
        assert_eq!(info(&public, "bob").names, ["busybox:latest"]);
        assert_eq!(info(&public, "alice").names.len(), 2);

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
}

//! The cluster's images: the controller's store, which jobs run from, listed for users and
//! filled from registries on their request (`POST /v1/images/pull`), as Shifter's image
//! gateway pulls and converts images for its users: the controller pulls (its own
//! credentials, the administrator's registry settings), flattens into one squashfs file, and
//! the nodes fetch that file from it. Users may pull what `[registry] user_pulls` allows.
//! They may also upload image files of their own (`POST /v1/images/import`: a
//! docker-archive, OCI archive, root filesystem tarball, enroot's squashfs or a SIF file),
//! named under `users/THEIR-NAME/` so that nobody's upload takes another's name.
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

    /// The images in the cluster's store, by name.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ApiError> {
        let mut images: Vec<ImageInfo> = self
            .open()?
            .list()
            .map_err(ApiError::internal)?
            .iter()
            .map(info)
            .collect();
        images.sort_by(|a, b| a.names.cmp(&b.names).then(a.id.cmp(&b.id)));
        Ok(images)
    }

    /// Pulls `reference` into the cluster's store for `caller`: root any image, users those
    /// the administrator allows.
    pub fn pull(&self, caller: Caller, reference: &str) -> Result<ImageInfo, ApiError> {
        let target = PullReference::parse(reference).map_err(|e| ApiError::bad(e.to_string()))?;
        let name = target.name();
        if caller.uid != 0 {
            self.registry
                .allows_user_pull(&name)
                .map_err(ApiError::forbidden)?;
        }
        let options = RegistryOptions {
            ca_certs: self.registry.ca_certs.clone(),
            insecure: self.registry.insecure.clone(),
            creds: None,
            auth_file: self.auth_file.clone(),
        };
        let record = self
            .open()?
            .pull(reference, &options)
            .map_err(|e| ApiError {
                status: 502,
                message: format!("the controller could not pull {reference}: {e}"),
            })?;
        eprintln!(
            "berth: uid {} pulled {name} into the cluster's store (id {})",
            caller.uid,
            record.id.short()
        );
        Ok(info(&record))
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
        let user = crate::user_of(caller.uid)?.user;
        let full = format!("users/{user}/{}", asked.repository);
        let named = Reference::parse(&format!("{full}:{}", asked.tag)).map_err(|_| {
            ApiError::forbidden(format!(
                "your user name ({user}) cannot be part of an image name (lower-case letters, digits, '.', '_' and '-'): ask an administrator to import it"
            ))
        })?;
        Ok(named.to_string())
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
        Ok(info(&record))
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
    let unknown = || ApiError {
        status: 404,
        message: format!("no image {hex} here"),
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unknown());
    }
    store
        .resolve(hex)
        .ok()
        .filter(|record| record.id.hex() == hex)
        .ok_or_else(unknown)
}

fn info(r: &ImageRecord) -> ImageInfo {
    ImageInfo {
        id: r.id.to_string(),
        names: r.names.clone(),
        size: r.size,
        imported: r.imported,
        architecture: r.architecture.clone(),
    }
}

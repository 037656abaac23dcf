//! The `kea-operator` command: its flags and log setup for running the controller ([`run`]),
//! and what it prints besides: the CRD and RBAC manifests ([`manifests`]), the children of
//! Microservices in a file ([`render`]), a PlantUML diagram of a namespace ([`diagram`]); and
//! the `helm test` client of the operator's endpoints ([`probe`]); and the backup and
//! restore of embedded stores and the uploads to and downloads from buckets of all stores'
//! backups ([`store_backup`], [`s3`]). The controller itself is
//! the `kea-operator` library.

pub mod diagram;
pub mod manifests;
pub mod probe;
pub mod render;
pub mod run;
pub mod s3;
pub mod store_backup;

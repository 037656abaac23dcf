//! What the `kea-operator` command prints besides running the controller: the CRD and RBAC
//! manifests ([`manifests`]), the children of Microservices in a file ([`render`]) and a
//! PlantUML diagram of a namespace ([`diagram`]). The controller itself is the `kea-operator`
//! library; this crate only reads it.

pub mod diagram;
pub mod manifests;
pub mod render;

//! The executor's side of Arrow Flight: its service. The messages, clients and server
//! plumbing it shares with the coordinator live in `fletch-transport`.

pub mod service;

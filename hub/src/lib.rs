//! The Ketenhub hub.
//!
//! The hub accepts mutually authenticated TLS 1.3 connections from the
//! agencies of the youth-protection chain, carries CBOR frames over WebSocket,
//! and keeps case threads as durable, ordered logs that it delivers to every
//! member, online or not. It stores ciphertext and the metadata it needs to
//! enforce membership; it never sees case content.
//!
//! The modules follow the path of a connection: [`tls`] checks who is calling,
//! [`server`] accepts, [`connection`] reads and writes frames within the
//! [`config::Limits`], [`requests`] decides what a request does (on the state
//! [`session`] shares), [`store`] keeps it, [`durability`] makes it durable in
//! batches, and [`delivery`] pushes it to the members. [`blobs`] keeps
//! encrypted attachments for a thread's members. [`revocation`] keeps
//! certificate expiry and the CRLs biting on open connections.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod audit;
pub mod blobs;
pub mod chain_figures;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connection;
pub mod delivery;
pub mod demo;
pub mod devhub;
pub mod devices;
pub mod durability;
pub mod groups;
pub mod handovers;
pub mod inbox;
mod locks;
pub mod outbox;
pub mod policy;
pub mod quotas;
pub mod ratelimit;
pub mod requests;
pub mod retention;
pub mod revocation;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod stages;
pub mod store;
pub mod tls;

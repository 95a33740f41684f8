//! The Ketenhub desk: the web application caseworkers and privacy officers use.
//!
//! A desk runs on the agency's side for one identity: it holds that
//! identity's certificate, key and MLS device state (so the hub still reads
//! nothing), connects to the hub through the SDK, keeps what it receives in
//! its own store, and serves pages on loopback to the person at the machine.
//! [`serve`] runs one desk; [`demo`] starts a development hub with desks for a
//! whole chain. See `docs/desk.md` for the guide.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod demo;
pub mod desk;
pub mod i18n;
pub mod serve;
pub mod store;
pub mod web;

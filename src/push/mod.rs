//! Real-time push to apps (README "Push to apps"): consumed events projected onto channels
//! with a bounded history in Redis, served to mobile and web apps over Server-Sent Events and
//! WebSocket with exact resume, and authenticated by JWTs issued by the app's backend.
//!
//! Design (README "Push to apps"): [`project`] appends consumed events to channel
//! histories (`crate::redis::push`, one script per append) in an internal consumer group; [`hub`] holds
//! the instance's one pub/sub read loop and fans out to local clients; [`session`] resumes a
//! connection exactly (register, one resume script, replay, then live after the replay);
//! [`http`] and [`ws`] are the transports; [`position`] and [`rules`] the vocabulary.

pub mod device;
pub mod http;
pub mod hub;
pub mod position;
pub mod project;
pub mod rules;
pub mod service;
pub mod session;
pub mod ws;

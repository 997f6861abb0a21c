//! Real-time push to apps (README "Push to apps"): consumed events projected onto channels
//! with a bounded history in Redis, served to mobile and web apps over Server-Sent Events and
//! WebSocket with exact resume, and authenticated by JWTs issued by the app's backend.

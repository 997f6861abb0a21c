//! Slow HTTP clients (slowloris, docs/reliability-matrix.md T45): loopback connections that send a
//! script at a fixed pace, one byte per tick, after an optional burst, and record what the
//! server answered and when it closed the connection. All clients are driven from the
//! calling thread with non-blocking sockets, so 100 of them cost no threads.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One slow client.
pub struct SlowClient {
    /// What the client is (for messages).
    pub label: String,
    stream: TcpStream,
    script: Vec<u8>,
    sent: usize,
    next_byte: Instant,
    /// When the connection was opened.
    pub opened: Instant,
    /// Everything the server sent.
    pub answer: Vec<u8>,
    /// Time from opening to the server closing the connection (EOF or reset).
    pub closed_after: Option<Duration>,
}

impl SlowClient {
    /// Connects to `addr`, writes the first `burst` bytes of `script` at once and leaves the
    /// rest for [`drive`].
    pub fn open(label: &str, addr: &str, script: &[u8], burst: usize) -> SlowClient {
        let opened = Instant::now();
        let mut stream = TcpStream::connect(addr).expect("connect a slow client");
        stream.write_all(&script[..burst]).expect("write the burst");
        stream.set_nonblocking(true).unwrap();
        SlowClient {
            label: label.to_string(),
            stream,
            script: script.to_vec(),
            sent: burst,
            next_byte: Instant::now(),
            opened,
            answer: Vec::new(),
            closed_after: None,
        }
    }

    /// The answer as text (lossy).
    pub fn answer_text(&self) -> String {
        String::from_utf8_lossy(&self.answer).into_owned()
    }

    /// How many script bytes the server received before it closed.
    pub fn sent(&self) -> usize {
        self.sent
    }

    fn close_now(&mut self) {
        self.closed_after = Some(self.opened.elapsed());
    }

    /// Reads what is there; sends the next byte when its tick has come.
    fn poll(&mut self, every: Duration) {
        if self.closed_after.is_some() {
            return;
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return self.close_now(),
                Ok(n) => self.answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return self.close_now(),
            }
        }
        let now = Instant::now();
        if self.sent < self.script.len() && now >= self.next_byte {
            match self.stream.write(&self.script[self.sent..=self.sent]) {
                Ok(1) => {
                    self.sent += 1;
                    self.next_byte = now + every;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => self.close_now(),
            }
        }
    }
}

/// Drives `clients` every 10 ms, one byte per `every` each, until all are closed or `limit`
/// has passed (bounded in time; the loop runs at most `limit / 10 ms` rounds).
pub fn drive(clients: &mut [SlowClient], every: Duration, limit: Duration) {
    let start = Instant::now();
    let rounds = limit.as_millis() / 10 + 1;
    for _ in 0..rounds {
        for c in clients.iter_mut() {
            c.poll(every);
        }
        if clients.iter().all(|c| c.closed_after.is_some()) || start.elapsed() >= limit {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

//! Hand-rolled, allocation-light loopback clients: keep-alive HTTP/1.1 and a client
//! WebSocket (masked text frames out, everything in discarded).

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use bytes::{Buf as _, BytesMut};
use sb_twilio::signature::sign_url;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::TOKEN;

/// A keep-alive HTTP/1.1 connection that reads Content-Length framed responses.
pub(crate) struct Http {
    stream: TcpStream,
    buffer: BytesMut,
}

impl Http {
    pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: BytesMut::with_capacity(4096),
        })
    }

    /// Sends one request, returns the response status.
    pub(crate) async fn call(&mut self, request: &[u8]) -> anyhow::Result<u16> {
        self.stream.write_all(request).await?;
        loop {
            if let Some((status, length)) = parse_response(&self.buffer)? {
                self.buffer.advance(length);
                return Ok(status);
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                bail!("connection closed mid-response");
            }
        }
    }
}

/// `(status, total length)` of a complete response at the start of `buffer`.
fn parse_response(buffer: &[u8]) -> anyhow::Result<Option<(u16, usize)>> {
    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buffer[..end]).context("response head")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("status line")?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let total = end + 4 + length;
    Ok((buffer.len() >= total).then_some((status, total)))
}

/// A client WebSocket: masked text frames out (zero mask key), everything in discarded.
pub(crate) struct Ws {
    pub(crate) writer: tokio::net::tcp::OwnedWriteHalf,
    pub(crate) reader: tokio::task::JoinHandle<()>,
}

impl Ws {
    pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let signature = sign_url(TOKEN, "wss://agent.example.com/twilio/media");
        let request = format!(
            "GET /twilio/media HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Twilio-Signature: {signature}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if stream.read(&mut byte).await? == 0 {
                bail!("closed during the handshake");
            }
            head.push(byte[0]);
        }
        anyhow::ensure!(
            head.starts_with(b"HTTP/1.1 101"),
            "upgrade refused: {}",
            String::from_utf8_lossy(&head)
        );
        let (mut read, writer) = stream.into_split();
        let reader = tokio::spawn(async move {
            let mut sink = vec![0u8; 4096];
            while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        Ok(Self { writer, reader })
    }

    pub(crate) async fn send(&mut self, text: &str) -> anyhow::Result<()> {
        let len = text.len();
        let mut frame = Vec::with_capacity(len + 8);
        frame.push(0x81);
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(text.as_bytes());
        self.writer.write_all(&frame).await?;
        Ok(())
    }
}

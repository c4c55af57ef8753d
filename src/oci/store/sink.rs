//! A file sink for downloads: bytes are gathered into large buffers and written by a
//! thread of their own, so the network side never waits on the disk (nor on a hop to
//! the blocking pool for each write) while memory stays bounded by the queue. Each
//! buffer written is sent on to the disk at once, so the fsync that commits the file
//! waits only for the last ones instead of the whole file after the transfer.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use tokio_util::sync::PollSender;

/// Bytes per buffer handed to the writer thread.
const CHUNK: usize = 2 << 20;
/// Buffers in flight: at most `QUEUE × CHUNK` bytes wait for the disk.
const QUEUE: usize = 2;

pub struct FileSink {
    buf: Vec<u8>,
    tx: PollSender<Vec<u8>>,
    /// Written buffers coming back for reuse: fresh 2 MiB allocations would be faulted
    /// in page by page (tens of thousands of page faults a GiB).
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    writer: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl FileSink {
    pub fn new(mut file: std::fs::File) -> FileSink {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(QUEUE);
        let (back, spare) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            let mut offset = 0;
            while let Some(mut b) = rx.blocking_recv() {
                file.write_all(&b)?;
                start_writeback(&file, offset, b.len());
                offset += b.len() as u64;
                b.clear();
                let _ = back.send(b);
            }
            file.flush()
        });
        FileSink {
            buf: Vec::with_capacity(CHUNK),
            tx: PollSender::new(tx),
            spare,
            writer: Some(writer),
        }
    }

    /// Hand the rest to the writer thread and wait until everything is written.
    pub async fn finish(mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let b = std::mem::take(&mut self.buf);
            if let Some(tx) = self.tx.get_ref() {
                tx.send(b).await.map_err(|_| gone())?;
            }
        }
        self.tx.close();
        let w = self.writer.take().expect("finish once");
        tokio::task::spawn_blocking(move || w.join())
            .await
            .map_err(std::io::Error::other)?
            .map_err(|_| std::io::Error::other("the file writer thread panicked"))?
    }

    /// Send the full buffer when the queue has room.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        match self.tx.poll_reserve(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Err(gone())),
            Poll::Ready(Ok(())) => {
                let next = self
                    .spare
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
                let b = std::mem::replace(&mut self.buf, next);
                Poll::Ready(self.tx.send_item(b).map_err(|_| gone()))
            }
        }
    }
}

/// Start writing these bytes to disk without waiting (write-behind): disk time overlaps
/// network time. Advisory: the fsync at commit reports any write error.
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; the range is what was just written.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &std::fs::File, _: u64, _: usize) {}

fn gone() -> std::io::Error {
    std::io::Error::other("the file writer stopped (disk full or write error)")
}

impl AsyncWrite for FileSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.buf.len() >= CHUNK {
            match self.poll_send(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn writes_everything_in_order() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let mut s = FileSink::new(tmp.reopen().unwrap());
        let mut want = Vec::new();
        for i in 0..3000u32 {
            let chunk = vec![(i % 251) as u8; (i as usize * 37) % 9000 + 1];
            s.write_all(&chunk).await.unwrap();
            want.extend_from_slice(&chunk);
        }
        s.flush().await.unwrap();
        s.finish().await.unwrap();
        assert_eq!(std::fs::read(tmp.path()).unwrap(), want);
    }
}

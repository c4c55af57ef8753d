//! A file sink for downloads: chunks go as they arrived (no copy) to a thread of their
//! own that writes them, so the network side never waits on the disk (nor on a hop to
//! the blocking pool for each write) while memory stays bounded by the queue. Each
//! chunk written is sent on to the disk at once, so the fsync that commits the file
//! waits only for the last ones instead of the whole file after the transfer.

use std::io::Write;

use bytes::Bytes;

/// Chunks in flight (up to 1 MiB each from the stores): what waits for the disk.
const QUEUE: usize = 8;

pub struct FileSink {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    writer: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    bar: Option<indicatif::ProgressBar>,
}

impl FileSink {
    pub fn new(mut file: std::fs::File, bar: Option<indicatif::ProgressBar>) -> FileSink {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
        let writer = std::thread::spawn(move || {
            let mut offset = 0;
            while let Some(b) = rx.blocking_recv() {
                file.write_all(&b)?;
                start_writeback(&file, offset, b.len());
                offset += b.len() as u64;
            }
            file.flush()
        });
        FileSink {
            tx: Some(tx),
            writer: Some(writer),
            bar,
        }
    }

    /// Wait until everything handed over is written.
    pub async fn finish(mut self) -> std::io::Result<()> {
        self.tx = None;
        let w = self.writer.take().expect("finish once");
        tokio::task::spawn_blocking(move || w.join())
            .await
            .map_err(std::io::Error::other)?
            .map_err(|_| std::io::Error::other("the file writer thread panicked"))?
    }
}

#[async_trait::async_trait]
impl super::BlobSink for FileSink {
    async fn put(&mut self, chunk: Bytes) -> std::io::Result<()> {
        let n = chunk.len() as u64;
        let tx = self.tx.as_ref().ok_or_else(gone)?;
        tx.send(chunk).await.map_err(|_| gone())?;
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        Ok(())
    }

    /// The writer thread writes in order; `finish` waits for it.
    async fn flush_all(&mut self) -> std::io::Result<()> {
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::super::BlobSink;
    use super::*;

    #[tokio::test]
    async fn writes_everything_in_order() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let mut s = FileSink::new(tmp.reopen().unwrap(), None);
        let mut want = Vec::new();
        for i in 0..3000u32 {
            let chunk = vec![(i % 251) as u8; (i as usize * 37) % 9000 + 1];
            want.extend_from_slice(&chunk);
            s.put(Bytes::from(chunk)).await.unwrap();
        }
        s.flush_all().await.unwrap();
        s.finish().await.unwrap();
        assert_eq!(std::fs::read(tmp.path()).unwrap(), want);
    }
}

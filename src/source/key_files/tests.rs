//! Each way of replacing a key file leads to a re-read of that key, on a real file system.

use super::*;
use std::io::Write;
use std::os::unix::fs::symlink;

const SOON: Duration = Duration::from_secs(3);

struct Harness {
    files: watch::Sender<Vec<PathBuf>>,
    rereads: mpsc::UnboundedReceiver<Vec<PathBuf>>,
}

impl Harness {
    async fn start(keys: &[&Path], interval: Duration) -> Self {
        let (files, files_rx) = watch::channel(keys.iter().map(|p| p.to_path_buf()).collect());
        let (tx, mut rereads) = mpsc::unbounded_channel();
        tokio::spawn(KeyFileWatcher::new(interval).unwrap().run(files_rx, tx));
        // New keys are re-read once their directory is watched: from then on, events count.
        let first = tokio::time::timeout(SOON, rereads.recv()).await.unwrap();
        assert_eq!(first.unwrap().len(), keys.len());
        Self { files, rereads }
    }

    /// Waits for a re-read of `key`, ignoring re-reads of other files.
    async fn reread_of(&mut self, key: &Path, what: &str) {
        let wait = async {
            loop {
                if self.rereads.recv().await.unwrap().iter().any(|p| p == key) {
                    return;
                }
            }
        };
        tokio::time::timeout(SOON, wait)
            .await
            .unwrap_or_else(|_| panic!("{what}: {} was not re-read", key.display()));
    }

    /// Asserts that `key` is not re-read for `quiet`.
    async fn no_reread_of(&mut self, key: &Path, quiet: Duration, what: &str) {
        let wait = async {
            loop {
                let paths = self.rereads.recv().await.unwrap();
                assert!(
                    !paths.iter().any(|p| p == key),
                    "{what}: {} re-read",
                    key.display()
                );
            }
        };
        let _ = tokio::time::timeout(quiet, wait).await;
    }
}

const LONG: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn in_place_write_is_read_once_closed() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("openai");
    std::fs::write(&key, "k0").unwrap();
    let mut h = Harness::start(&[&key], LONG).await;
    let mut file = std::fs::File::create(&key).unwrap();
    file.write_all(b"k1").unwrap();
    // Another file renamed in the directory must not cause a read of the half-written key.
    std::fs::write(dir.path().join("tmp"), "x").unwrap();
    std::fs::rename(dir.path().join("tmp"), dir.path().join("other")).unwrap();
    h.no_reread_of(&key, Duration::from_millis(300), "still open")
        .await;
    drop(file);
    h.reread_of(&key, "closed").await;
}

#[tokio::test]
async fn atomic_rename_and_editor_save_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("openai.key");
    std::fs::write(&key, "k0").unwrap();
    let mut h = Harness::start(&[&key], LONG).await;
    std::fs::write(dir.path().join(".openai.key.tmp"), "k1").unwrap();
    std::fs::rename(dir.path().join(".openai.key.tmp"), &key).unwrap();
    h.reread_of(&key, "atomic rename").await;
    // Vim: the original becomes the backup, the new content is written under the name.
    std::fs::rename(&key, dir.path().join("openai.key~")).unwrap();
    std::fs::write(&key, "k2").unwrap();
    std::fs::remove_file(dir.path().join("openai.key~")).unwrap();
    h.reread_of(&key, "editor save").await;
}

#[tokio::test]
async fn kubernetes_data_symlink_swap_is_read() {
    // The layout of a Secret volume: dir/openai -> ..data/openai, ..data -> ..<timestamp>.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..2026_11_30_05_00_00.1")).unwrap();
    std::fs::write(d.join("..2026_11_30_05_00_00.1/openai"), "k0").unwrap();
    symlink("..2026_11_30_05_00_00.1", d.join("..data")).unwrap();
    symlink("..data/openai", d.join("openai")).unwrap();
    let key = d.join("openai");
    let mut h = Harness::start(&[&key], LONG).await;
    std::fs::create_dir(d.join("..2026_11_30_05_01_00.2")).unwrap();
    std::fs::write(d.join("..2026_11_30_05_01_00.2/openai"), "k1").unwrap();
    symlink("..2026_11_30_05_01_00.2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..2026_11_30_05_00_00.1")).unwrap();
    h.reread_of(&key, "..data swap").await;
}

#[tokio::test]
async fn directory_removed_and_recreated_is_read() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("keys");
    std::fs::create_dir(&dir).unwrap();
    let key = dir.join("openai");
    std::fs::write(&key, "k0").unwrap();
    let mut h = Harness::start(&[&key], LONG).await;
    std::fs::remove_dir_all(&dir).unwrap();
    h.reread_of(&key, "deleted").await;
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(&key, "k1").unwrap();
    h.reread_of(&key, "re-created").await;
    // The new directory is watched, not the old one.
    std::fs::write(&key, "k2").unwrap();
    h.reread_of(&key, "written after re-creation").await;
}

#[tokio::test]
async fn unrelated_files_do_not_cause_reads() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("openai");
    std::fs::write(&key, "k0").unwrap();
    let mut h = Harness::start(&[&key], LONG).await;
    std::fs::write(dir.path().join("routes.yaml"), "x").unwrap();
    std::fs::write(dir.path().join("a.tmp"), "x").unwrap();
    std::fs::rename(dir.path().join("a.tmp"), dir.path().join("b")).unwrap();
    std::fs::remove_file(dir.path().join("b")).unwrap();
    h.no_reread_of(&key, Duration::from_millis(300), "unrelated changes")
        .await;
}

#[tokio::test]
async fn a_new_key_file_is_read_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    std::fs::write(&a, "a").unwrap();
    let mut h = Harness::start(&[&a], LONG).await;
    let other = tempfile::tempdir().unwrap();
    let b = other.path().join("b");
    std::fs::write(&b, "b").unwrap();
    h.files.send(vec![a.clone(), b.clone()]).unwrap();
    h.reread_of(&b, "added").await;
    std::fs::write(&b, "b2").unwrap();
    h.reread_of(&b, "written in its newly watched directory")
        .await;
}

#[tokio::test]
async fn the_periodic_reread_reads_every_key_without_events() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("openai");
    std::fs::write(&key, "k0").unwrap();
    let interval = Duration::from_millis(200);
    let mut h = Harness::start(&[&key], interval).await;
    let t0 = Instant::now();
    h.reread_of(&key, "first tick").await;
    h.reread_of(&key, "second tick").await;
    assert!(t0.elapsed() >= interval, "{:?}", t0.elapsed());
}

#[tokio::test]
async fn the_periodic_reread_skips_a_key_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("openai");
    std::fs::write(&key, "k0").unwrap();
    let interval = Duration::from_millis(200);
    let mut h = Harness::start(&[&key], interval).await;
    let mut file = std::fs::File::create(&key).unwrap();
    file.write_all(b"k1").unwrap();
    // A tick may have been due before the write was seen; after that, none reads it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while h.rereads.try_recv().is_ok() {}
    // Two ticks pass while it stays open.
    h.no_reread_of(&key, Duration::from_millis(400), "being written")
        .await;
    drop(file);
    h.reread_of(&key, "closed").await;
}

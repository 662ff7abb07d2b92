//! The runtime through the host library: component cache, describe.

use sluice::plan::PluginRef;
use sluice::runtime::{CacheOutcome, ComponentCache, Runtime};

fn plugin_ref() -> PluginRef {
    sluice_e2e::plugin_ref("sqlite.wasm")
}

#[tokio::test]
async fn the_second_load_of_an_unchanged_plugin_comes_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let plugin = plugin_ref();
    let runtime = Runtime::new(ComponentCache::new(Some(cache.path().to_path_buf()))).unwrap();
    let first = runtime.load(&plugin).await.unwrap();
    assert_eq!(first.cache, CacheOutcome::Compiled);
    // A new runtime (a new process, in effect) finds it compiled.
    let runtime = Runtime::new(ComponentCache::new(Some(cache.path().to_path_buf()))).unwrap();
    let second = runtime.load(&plugin).await.unwrap();
    assert_eq!(second.cache, CacheOutcome::Hit);
    assert_eq!(second.info.name, "sqlite");
    assert_eq!(second.info.kinds, vec!["sqlite".to_string()]);
    assert!(
        second.info.needs.iter().all(|n| !n.reason.is_empty()),
        "every need has a reason"
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_component_is_refused_clearly() {
    let runtime = Runtime::new(ComponentCache::new(None)).unwrap();
    let mut plugin = plugin_ref();
    plugin.bytes = b"not wasm at all".to_vec().into();
    plugin.digest = "00".into();
    let err = runtime
        .load(&plugin)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("plugin `sqlite`") && err.contains("not a loadable sluice component"),
        "{err}"
    );
}

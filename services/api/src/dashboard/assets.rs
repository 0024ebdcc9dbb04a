//! The front end's bundle (`dashboard/dist`, built from `dashboard/src` by `npm run build`,
//! which `scripts/dev-deps` runs), served from the binary at `/assets/…`.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "dashboard/dist/"]
struct Dist;

pub async fn asset(Path(path): Path<String>) -> Response {
    let Some(file) = Dist::get(&path) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let mime = file.metadata.mimetype().to_owned();
    (
        [
            (header::CONTENT_TYPE, mime),
            // Names carry no hash: revalidate, cheaply, by ETag.
            (header::CACHE_CONTROL, "no-cache".to_owned()),
            (
                header::ETAG,
                format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..8])),
            ),
        ],
        file.data,
    )
        .into_response()
}

//! The handlers every configuration resource has (list, create, get, change, enable, disable,
//! delete), generated once so that a resource only states what differs: its types, its paths,
//! its doc lines and its documented responses. utoipa needs literal paths, so each one is passed in.

/// One standard handler of a `ConfigRow` resource. `$doc` becomes the operation's description.
macro_rules! config_handler {
    (list $row:ident, $view:ident, $filter:ident; $doc:literal, $tag:literal, $p:literal, [$($resp:tt)*]) => {
        #[doc = $doc]
        #[utoipa::path(get, path = $p, tag = $tag, params($filter, PageQuery), responses($($resp)*))]
        pub(crate) async fn list(
            State(state): State<AppState>,
            caller: Caller,
            ApiQuery(filter): ApiQuery<$filter>,
            ApiQuery(page): ApiQuery<PageQuery>,
        ) -> ApiResult<axum::Json<Page<$view>>> {
            crud::list::<$row>(&state, &caller, filter, page).await
        }
    };
    (create $row:ident, $input:ident; $doc:literal, $tag:literal, $p:literal, [$($resp:tt)*]) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $p, tag = $tag, request_body = $input, responses($($resp)*))]
        pub(crate) async fn create(
            State(state): State<AppState>,
            caller: Caller,
            ApiJson(input): ApiJson<$input>,
        ) -> ApiResult<Response> {
            config_row::create::<$row>(&state, &caller, input).await
        }
    };
    (get_one $row:ident, $key:literal; $doc:literal, $tag:literal, $p:literal, [$($resp:tt)*]) => {
        #[doc = $doc]
        #[utoipa::path(get, path = $p, tag = $tag, params(($key = String, Path)), responses($($resp)*))]
        pub(crate) async fn get_one(
            State(state): State<AppState>,
            caller: Caller,
            Path(id): Path<String>,
        ) -> ApiResult<Response> {
            crud::get_one::<$row>(&state, &caller, &id).await
        }
    };
    (update $row:ident, $input:ident, $key:literal; $doc:literal, $tag:literal, $p:literal, [$($resp:tt)*]) => {
        #[doc = $doc]
        #[utoipa::path(patch, path = $p, tag = $tag, params(($key = String, Path)), request_body = $input,
            responses($($resp)*))]
        pub(crate) async fn update(
            State(state): State<AppState>,
            caller: Caller,
            Path(id): Path<String>,
            if_match: IfMatch,
            ApiJson(input): ApiJson<$input>,
        ) -> ApiResult<Response> {
            config_row::update::<$row>(&state, &caller, &id, if_match, input).await
        }
    };
    (set_enabled $name:ident, $on:literal, $row:ident, $key:literal; $doc:literal, $tag:literal, $p:literal, [$($resp:tt)*]) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $p, tag = $tag, params(($key = String, Path)), responses($($resp)*))]
        pub(crate) async fn $name(
            State(state): State<AppState>,
            caller: Caller,
            Path(id): Path<String>,
            if_match: IfMatch,
        ) -> ApiResult<Response> {
            config_row::set_enabled::<$row>(&state, &caller, &id, if_match, $on).await
        }
    };
    (delete $row:ident, $key:literal; $doc:literal, $tag:literal, $p:literal, [$($resp:tt)*]) => {
        #[doc = $doc]
        #[utoipa::path(delete, path = $p, tag = $tag, params(($key = String, Path)), responses($($resp)*))]
        pub(crate) async fn delete(
            State(state): State<AppState>,
            caller: Caller,
            Path(id): Path<String>,
            if_match: IfMatch,
        ) -> ApiResult<Response> {
            config_row::delete::<$row>(&state, &caller, &id, if_match, false).await
        }
    };
}

pub(crate) use config_handler;

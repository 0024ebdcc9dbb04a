# The dashboard's English messages: the reference every other catalogue must match key for key.

product = mih
skip-to-content = Skip to content
nav-overview = Overview
nav-label = Sections
language = Language
signed-in-as = Signed in as { $label } ({ $role })
role-viewer = viewer
role-operator = operator
role-admin = admin
log-out = Log out

login-title = Log in
login-intro = Log in with an API token of this hub. Create one with mih token create --role viewer (or operator, admin).
login-token = API token
login-submit = Log in
login-refused = This token is unknown, revoked or expired.
login-expired = Your session has ended; log in again.
login-csrf = The form was too old or came from elsewhere; please try again.

overview-title = Overview
window = Window
window-1h = Last hour
window-24h = Last 24 hours
window-7d = Last 7 days
updated-at = Updated:
live-note = Figures refresh every 10 seconds.

card-success-rate = Success rate
card-throughput = Throughput
card-throughput-unit = attempts per minute
card-latency = Latency p50 / p95 / p99
card-dead-letters = Dead letters
card-pending = Pending jobs
card-open-circuits = Open circuits
no-data = no data yet

chart-deliveries = Deliveries
chart-success-rate = Success rate
chart-latency = Latency
series-delivered = Delivered
series-failed = Failed
series-success-rate = Success rate
series-p50 = p50
series-p95 = p95
series-p99 = p99
chart-table-caption = The chart's values
chart-table-time = Time

services-title = Services
services-empty = No services yet.
col-service = Service
col-circuit = Circuit
col-failures = Consecutive failures
col-last-error = Last error
col-pending = Pending jobs
col-dead-letters = Dead letters
circuit-closed = closed
circuit-open = open
circuit-half_open = half open
circuit-retry-at = retry at
unknown = unknown

error-title = Something went wrong
error-forbidden = Your token's role may not do this.
error-not-found = There is no such page.
error-internal = The hub could not answer: { $reason }
back-to-overview = Back to the overview
language-apply = Apply

nav-services = Services
col-kind = Kind
col-enabled = Enabled
col-actions = Actions
enabled-yes = enabled
enabled-no = disabled
reset-circuit = Reset circuit
reset-done = The circuit of { $service } is closed again.
test-request = Send a test request
test-method = Method
test-path = Path
test-send = Send
test-result = Test request to { $service }
test-status = Status
test-attempts = Attempts
test-duration = Duration (ms)
test-error = Error
test-body = Response body
test-none = no answer
viewer-note = Your token's role can look but not change anything; an operator can reset circuits and send test requests.

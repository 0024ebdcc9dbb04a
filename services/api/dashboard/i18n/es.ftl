# The dashboard's Spanish messages (keys must match en.ftl).

product = mih
skip-to-content = Saltar al contenido
nav-overview = Resumen
nav-label = Secciones
language = Idioma
signed-in-as = Sesión de { $label } ({ $role })
role-viewer = lector
role-operator = operador
role-admin = administrador
log-out = Cerrar sesión

login-title = Iniciar sesión
login-intro = Inicie sesión con un token de API de este hub. Cree uno con mih token create --role viewer (u operator, admin).
login-token = Token de API
login-submit = Iniciar sesión
login-refused = Este token es desconocido, está revocado o ha caducado.
login-expired = Su sesión ha terminado; inicie sesión de nuevo.
login-csrf = El formulario era demasiado antiguo o venía de otro sitio; inténtelo de nuevo.

overview-title = Resumen
window = Periodo
window-1h = Última hora
window-24h = Últimas 24 horas
window-7d = Últimos 7 días
updated-at = Actualizado:
live-note = Las cifras se actualizan cada 10 segundos.

card-success-rate = Tasa de éxito
card-throughput = Rendimiento
card-throughput-unit = intentos por minuto
card-latency = Latencia p50 / p95 / p99
card-dead-letters = Mensajes fallidos
card-pending = Trabajos pendientes
card-open-circuits = Circuitos abiertos
no-data = aún sin datos

chart-deliveries = Entregas
chart-success-rate = Tasa de éxito
chart-latency = Latencia
series-delivered = Entregadas
series-failed = Fallidas
series-success-rate = Tasa de éxito
series-p50 = p50
series-p95 = p95
series-p99 = p99
chart-table-caption = Los valores del gráfico
chart-table-time = Hora

services-title = Servicios
services-empty = Todavía no hay servicios.
col-service = Servicio
col-circuit = Circuito
col-failures = Fallos consecutivos
col-last-error = Último error
col-pending = Trabajos pendientes
col-dead-letters = Mensajes fallidos
circuit-closed = cerrado
circuit-open = abierto
circuit-half_open = semiabierto
circuit-retry-at = reintento a las
unknown = desconocido

error-title = Algo ha fallado
error-forbidden = El rol de su token no permite hacer esto.
error-not-found = Esta página no existe.
error-internal = El hub no pudo responder: { $reason }
back-to-overview = Volver al resumen
language-apply = Aplicar

nav-services = Servicios
col-kind = Tipo
col-enabled = Activado
col-actions = Acciones
enabled-yes = activado
enabled-no = desactivado
reset-circuit = Restablecer circuito
reset-done = El circuito de { $service } vuelve a estar cerrado.
test-request = Enviar una solicitud de prueba
test-method = Método
test-path = Ruta
test-send = Enviar
test-result = Solicitud de prueba a { $service }
test-status = Estado
test-attempts = Intentos
test-duration = Duración (ms)
test-error = Error
test-body = Cuerpo de la respuesta
test-none = sin respuesta
viewer-note = El rol de su token permite ver pero no cambiar nada; un operador puede restablecer circuitos y enviar solicitudes de prueba.

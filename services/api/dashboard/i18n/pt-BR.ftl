# The dashboard's Brazilian Portuguese messages (keys must match en.ftl).

product = mih
skip-to-content = Pular para o conteúdo
nav-overview = Visão geral
nav-label = Seções
language = Idioma
signed-in-as = Conectado como { $label } ({ $role })
role-viewer = leitor
role-operator = operador
role-admin = administrador
log-out = Sair

login-title = Entrar
login-intro = Entre com um token de API deste hub. Crie um com mih token create --role viewer (ou operator, admin).
login-token = Token de API
login-submit = Entrar
login-refused = Este token é desconhecido, foi revogado ou expirou.
login-expired = Sua sessão terminou; entre novamente.
login-csrf = O formulário era antigo demais ou veio de outro site; tente novamente.

overview-title = Visão geral
window = Período
window-1h = Última hora
window-24h = Últimas 24 horas
window-7d = Últimos 7 dias
updated-at = Atualizado:
live-note = Os números são atualizados a cada 10 segundos.

card-success-rate = Taxa de sucesso
card-throughput = Vazão
card-throughput-unit = tentativas por minuto
card-latency = Latência p50 / p95 / p99
card-dead-letters = Mensagens mortas
card-pending = Tarefas pendentes
card-open-circuits = Circuitos abertos
no-data = ainda sem dados

chart-deliveries = Entregas
chart-success-rate = Taxa de sucesso
chart-latency = Latência
series-delivered = Entregues
series-failed = Com falha
series-success-rate = Taxa de sucesso
series-p50 = p50
series-p95 = p95
series-p99 = p99
chart-table-caption = Os valores do gráfico
chart-table-time = Hora

services-title = Serviços
services-empty = Ainda não há serviços.
col-service = Serviço
col-circuit = Circuito
col-failures = Falhas consecutivas
col-last-error = Último erro
col-pending = Tarefas pendentes
col-dead-letters = Mensagens mortas
circuit-closed = fechado
circuit-open = aberto
circuit-half_open = meio aberto
circuit-retry-at = nova tentativa às
unknown = desconhecido

error-title = Algo deu errado
error-forbidden = O papel do seu token não permite isto.
error-not-found = Esta página não existe.
error-internal = O hub não pôde responder: { $reason }
back-to-overview = Voltar à visão geral
language-apply = Aplicar

nav-services = Serviços
col-kind = Tipo
col-enabled = Ativado
col-actions = Ações
enabled-yes = ativado
enabled-no = desativado
reset-circuit = Redefinir circuito
reset-done = O circuito de { $service } está fechado novamente.
test-request = Enviar uma requisição de teste
test-method = Método
test-path = Caminho
test-send = Enviar
test-result = Requisição de teste para { $service }
test-status = Status
test-attempts = Tentativas
test-duration = Duração (ms)
test-error = Erro
test-body = Corpo da resposta
test-none = sem resposta
viewer-note = O papel do seu token permite ver, mas não alterar nada; um operador pode redefinir circuitos e enviar requisições de teste.

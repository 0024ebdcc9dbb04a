# The dashboard's Italian messages (keys must match en.ftl).

product = mih
skip-to-content = Vai al contenuto
nav-overview = Panoramica
nav-label = Sezioni
language = Lingua
signed-in-as = Accesso come { $label } ({ $role })
role-viewer = lettore
role-operator = operatore
role-admin = amministratore
log-out = Esci

login-title = Accedi
login-intro = Accedi con un token API di questo hub. Creane uno con mih token create --role viewer (oppure operator, admin).
login-token = Token API
login-submit = Accedi
login-refused = Questo token è sconosciuto, revocato o scaduto.
login-expired = La sessione è terminata; accedi di nuovo.
login-csrf = Il modulo era troppo vecchio o proveniva da un altro sito; riprova.

overview-title = Panoramica
window = Periodo
window-1h = Ultima ora
window-24h = Ultime 24 ore
window-7d = Ultimi 7 giorni
updated-at = Aggiornato:
live-note = I dati si aggiornano ogni 10 secondi.

card-success-rate = Tasso di successo
card-throughput = Volume
card-throughput-unit = tentativi al minuto
card-latency = Latenza p50 / p95 / p99
card-dead-letters = Messaggi non recapitati
card-pending = Lavori in attesa
card-open-circuits = Circuiti aperti
no-data = ancora nessun dato

chart-deliveries = Consegne
chart-success-rate = Tasso di successo
chart-latency = Latenza
series-delivered = Consegnate
series-failed = Fallite
series-success-rate = Tasso di successo
series-p50 = p50
series-p95 = p95
series-p99 = p99
chart-table-caption = I valori del grafico
chart-table-time = Ora

services-title = Servizi
services-empty = Nessun servizio per ora.
col-service = Servizio
col-circuit = Circuito
col-failures = Errori consecutivi
col-last-error = Ultimo errore
col-pending = Lavori in attesa
col-dead-letters = Messaggi non recapitati
circuit-closed = chiuso
circuit-open = aperto
circuit-half_open = semiaperto
circuit-retry-at = nuovo tentativo alle
unknown = sconosciuto

error-title = Qualcosa è andato storto
error-forbidden = Il ruolo del tuo token non consente questa operazione.
error-not-found = Questa pagina non esiste.
error-internal = L'hub non ha potuto rispondere: { $reason }
back-to-overview = Torna alla panoramica
language-apply = Applica

nav-services = Servizi
col-kind = Tipo
col-enabled = Attivo
col-actions = Azioni
enabled-yes = attivo
enabled-no = disattivato
reset-circuit = Reimposta circuito
reset-done = Il circuito di { $service } è di nuovo chiuso.
test-request = Invia una richiesta di prova
test-method = Metodo
test-path = Percorso
test-send = Invia
test-result = Richiesta di prova a { $service }
test-status = Stato
test-attempts = Tentativi
test-duration = Durata (ms)
test-error = Errore
test-body = Corpo della risposta
test-none = nessuna risposta
viewer-note = Il ruolo del tuo token consente di vedere ma non di modificare; un operatore può reimpostare i circuiti e inviare richieste di prova.

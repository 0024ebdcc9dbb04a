<?php
// This file is part of local_mih, the Moodle side of mih (Moodle integration hub).
//
// local_mih is free software: you can redistribute it and/or modify it under the terms of
// the GNU General Public License as published by the Free Software Foundation, either
// version 3 of the License, or (at your option) any later version.
//
// local_mih is distributed in the hope that it will be useful, but WITHOUT ANY WARRANTY;
// without even the implied warranty of MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.
// See the GNU General Public License for more details: <https://www.gnu.org/licenses/>.

/**
 * Italian strings of local_mih.
 *
 * @package    local_mih
 * @category   string
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$string['apitoken'] = 'Token API dell\'hub';
$string['apitoken_desc'] = 'Un token API dell\'hub con il ruolo di operatore, usato dai plugin che chiamano servizi tramite l\'hub (<code>\local_mih\hub::request()</code>). Per crearne uno: <code>mih token create --role operator</code>.';
$string['apiurl'] = 'URL dell\'API dell\'hub';
$string['apiurl_desc'] = 'L\'indirizzo dell\'API dell\'hub, ad esempio <code>https://hub.example.org:8084</code>.';
$string['attempts'] = 'Tentativi';
$string['batchsize'] = 'Dimensione del lotto';
$string['batchsize_desc'] = 'Eventi inviati all\'hub in una singola richiesta (da 1 a 1000).';
$string['check_api_forbidden'] = 'L\'hub su {$a->url} riconosce il token API, ma il suo ruolo non consente di chiamare servizi: assegnare al token il ruolo di operatore.';
$string['check_api_notconfigured'] = 'L\'URL dell\'API dell\'hub o il token API non è impostato: i plugin non possono chiamare servizi tramite l\'hub.';
$string['check_api_notfound'] = 'Su {$a->url} non risponde nulla che somigli all\'API dell\'hub (HTTP {$a->status}): verificare l\'URL dell\'API dell\'hub.';
$string['check_api_ok'] = 'L\'hub su {$a->url} accetta il token API per le chiamate ai servizi.';
$string['check_api_title'] = 'Chiamate ai servizi';
$string['check_api_unauthorised'] = 'L\'hub su {$a->url} ha rifiutato il token API: {$a->message}';
$string['check_badsecret'] = 'Il segreto di firma non è un segreto emesso dall\'hub: inizia con whsec_ seguito da testo in base64.';
$string['check_ingest_disabled'] = 'L\'hub conosce questo sito, ma ne rifiuta gli eventi: {$a->message}';
$string['check_ingest_notfound'] = 'Su {$a->url} non risponde nulla che somigli al punto di acquisizione dell\'hub (HTTP 404): verificare l\'URL di acquisizione dell\'hub.';
$string['check_ingest_ok'] = 'L\'hub su {$a->url} accetta gli eventi firmati da questo sito.';
$string['check_ingest_title'] = 'Eventi';
$string['check_ingest_unauthorised'] = 'L\'hub su {$a->url} ha rifiutato la firma di questo sito: {$a->message}. Verificare l\'ID della sorgente e il segreto di firma.';
$string['check_missing'] = 'Non ancora impostato: {$a}.';
$string['check_unexpected'] = 'L\'hub su {$a->url} ha risposto HTTP {$a->status}: {$a->message}';
$string['check_unreachable'] = 'Impossibile raggiungere l\'hub su {$a->url}: {$a->message}';
$string['circuit_open'] = 'Il circuito del servizio {$a} è aperto: l\'hub non gli invia nulla finché non si ripristina.';
$string['confirmdiscard'] = 'Eliminare definitivamente questi eventi? Non raggiungeranno mai l\'hub.';
$string['discard'] = 'Elimina';
$string['discardall'] = 'Elimina tutti gli eventi accantonati';
$string['discarded'] = '{$a} eventi accantonati eliminati.';
$string['enabled'] = 'Inoltra eventi';
$string['enabled_desc'] = 'Registra ogni evento del sito e lo invia all\'hub. Gli eventi vengono registrati solo se questa opzione è attiva e sono impostati l\'URL di acquisizione, l\'ID della sorgente e il segreto di firma.';
$string['event_webhook_received'] = 'Messaggio ricevuto dall\'hub';
$string['eventname'] = 'Evento';
$string['exclude'] = 'Eventi mai inoltrati';
$string['exclude_desc'] = 'Nomi di eventi, uno per riga; <code>*</code> corrisponde a qualsiasi cosa. Ad esempio <code>\core\event\course_viewed</code> o <code>\mod_forum\event\*</code>. Le esclusioni prevalgono sulle inclusioni.';
$string['facade_not_configured'] = 'L\'URL dell\'API dell\'hub o il token API di local_mih non è impostato.';
$string['facade_refused'] = 'L\'hub ha rifiutato la chiamata (HTTP {$a->status}): {$a->message}';
$string['facade_unreachable'] = 'Impossibile raggiungere l\'hub su {$a->url}: {$a->error}';
$string['heading_events'] = 'Eventi verso l\'hub';
$string['heading_events_desc'] = 'Creare nell\'hub una sorgente per questo sito, quindi incollare qui il suo ID e il suo segreto di firma. Ciò che attende di essere inviato e ciò che l\'hub ha rifiutato si trova nella <a href="{$a}">pagina della coda di invio</a>, che permette anche di verificare la connessione.';
$string['heading_facade'] = 'Chiamate ai servizi';
$string['heading_facade_desc'] = 'Altri plugin chiamano i servizi registrati nell\'hub tramite <code>\local_mih\hub</code>.';
$string['heading_inbound'] = 'Messaggi dall\'hub';
$string['heading_inbound_desc'] = 'I servizi esterni inviano messaggi all\'hub (tramite webhook o AMQP). Ogni minuto questo sito preleva quelli della sua sorgente e genera per ciascuno l\'evento <code>\local_mih\event\webhook_received</code>, che altri plugin osservano. Richiede l\'URL dell\'API dell\'hub, il token API e l\'ID della sorgente indicati sopra.';
$string['inbound'] = 'Ricevi messaggi in arrivo';
$string['inbound_desc'] = 'Preleva i messaggi che l\'hub conserva per questo sito e genera un evento per messaggio, in ordine. Finché questa opzione è disattivata, i messaggi attendono nell\'hub per il tempo previsto dalla sua conservazione.';
$string['include'] = 'Eventi inoltrati';
$string['include_desc'] = 'Nomi di eventi, uno per riga; <code>*</code> corrisponde a qualsiasi cosa. <code>*</code> da solo inoltra tutti gli eventi.';
$string['ingesturl'] = 'URL di acquisizione dell\'hub';
$string['ingesturl_desc'] = 'L\'indirizzo del punto di acquisizione dell\'hub, ad esempio <code>https://hub.example.org:8081</code> (<code>/v1/events</code> viene aggiunto se manca).';
$string['invalidaction'] = 'Azione sconosciuta: {$a}';
$string['invalidsecret'] = 'Questo non è un segreto di firma dell\'hub: inizia con whsec_ seguito da testo in base64, come l\'hub lo mostra per la sorgente.';
$string['lasterror'] = 'Ultimo errore';
$string['mih:manage'] = 'Inviare, riprovare ed eliminare gli eventi della coda di invio dell\'hub e verificare la connessione';
$string['mih:view'] = 'Visualizzare la coda di invio dell\'hub';
$string['nextattempt'] = 'Prossimo tentativo';
$string['noparked'] = 'L\'hub non ha rifiutato alcun evento.';
$string['notforwarding'] = 'Gli eventi non vengono registrati: l\'inoltro è disattivato o non configurato (<a href="{$a}">impostazioni</a>).';
$string['oldest'] = 'Evento in attesa più vecchio';
$string['outbox'] = 'Coda di invio dell\'hub';
$string['parked'] = 'Accantonati (rifiutati dall\'hub)';
$string['parkedevents'] = 'Eventi rifiutati dall\'hub';
$string['pending'] = 'In attesa di invio';
$string['pluginname'] = 'Hub di integrazione Moodle (mih)';
$string['privacy:metadata:hub'] = 'Ogni evento del sito viene inviato all\'hub di integrazione mih, che lo trasmette ai sistemi esterni collegati dai suoi amministratori.';
$string['privacy:metadata:hub:courseid'] = 'Il corso in cui si è verificato l\'evento.';
$string['privacy:metadata:hub:eventname'] = 'Che cosa è successo.';
$string['privacy:metadata:hub:ip'] = 'L\'indirizzo IP da cui proviene l\'evento.';
$string['privacy:metadata:hub:other'] = 'I dettagli dell\'evento, che possono includere dati personali.';
$string['privacy:metadata:hub:realuserid'] = 'L\'utente reale quando qualcuno ha effettuato l\'accesso come un altro utente.';
$string['privacy:metadata:hub:relateduserid'] = 'L\'utente a cui si riferisce l\'evento.';
$string['privacy:metadata:hub:timecreated'] = 'Quando si è verificato l\'evento.';
$string['privacy:metadata:hub:userid'] = 'L\'utente che ha causato l\'evento.';
$string['privacy:metadata:outbox'] = 'Gli eventi attendono qui finché l\'hub non li ha memorizzati; gli eventi rifiutati dall\'hub restano finché un amministratore non li reinvia o li elimina.';
$string['privacy:metadata:outbox:eventname'] = 'Che cosa è successo.';
$string['privacy:metadata:outbox:lasterror'] = 'Perché l\'hub non ha ancora memorizzato l\'evento.';
$string['privacy:metadata:outbox:payload'] = 'L\'intero evento così come verrà inviato, compresi gli ID degli utenti, l\'indirizzo IP e i suoi dettagli.';
$string['privacy:metadata:outbox:relateduserid'] = 'L\'utente a cui si riferisce l\'evento.';
$string['privacy:metadata:outbox:timecreated'] = 'Quando si è verificato l\'evento.';
$string['privacy:metadata:outbox:userid'] = 'L\'utente che ha causato l\'evento.';
$string['privacy:outboxpath'] = 'Eventi in attesa dell\'hub';
$string['reason'] = 'Motivo';
$string['retried'] = '{$a} eventi accantonati rimessi in coda.';
$string['retry'] = 'Riprova';
$string['retryall'] = 'Riprova tutti gli eventi accantonati';
$string['sendnow'] = 'Invia ora';
$string['sent_report'] = 'Inviati {$a->sent} eventi in {$a->batches} richieste; accantonati: {$a->parked}; trattenuti: {$a->deferred}.';
$string['service_disabled'] = 'Il servizio {$a} è disattivato nell\'hub.';
$string['service_not_found'] = 'Il servizio {$a} non è registrato nell\'hub.';
$string['signingsecret'] = 'Segreto di firma';
$string['signingsecret_desc'] = 'Il segreto di firma della sorgente come lo mostra l\'hub (whsec_…). Ogni richiesta all\'hub viene firmata con esso.';
$string['sourceid'] = 'ID della sorgente';
$string['sourceid_desc'] = 'L\'ID della sorgente di questo sito nell\'hub.';
$string['stopped'] = 'Interrotto: {$a}';
$string['task_pull_inbound'] = 'Ricevi messaggi dall\'hub';
$string['task_send_outbox'] = 'Invia eventi all\'hub';
$string['testconnection'] = 'Verifica connessione';
$string['timecreated'] = 'Avvenuto';
$string['timeout'] = 'Timeout delle richieste';
$string['timeout_desc'] = 'Secondi che può durare una richiesta all\'hub (da 1 a 60). L\'invio avviene dopo la consegna della pagina, quindi gli utenti non devono mai attenderlo.';
$string['waiting'] = 'Trattenuti dopo un errore';

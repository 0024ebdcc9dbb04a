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
 * Spanish strings of local_mih.
 *
 * @package    local_mih
 * @category   string
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$string['apitoken'] = 'Token de API del hub';
$string['apitoken_desc'] = 'Un token de API del hub con el rol de operador, usado por los plugins que llaman a servicios a través del hub (<code>\local_mih\hub::request()</code>). Cree uno con <code>mih token create --role operator</code>.';
$string['apiurl'] = 'URL de la API del hub';
$string['apiurl_desc'] = 'La dirección de la API del hub, por ejemplo <code>https://hub.example.org:8084</code>.';
$string['attempts'] = 'Intentos';
$string['batchsize'] = 'Tamaño del lote';
$string['batchsize_desc'] = 'Eventos enviados al hub en una sola solicitud (de 1 a 1000).';
$string['check_api_forbidden'] = 'El hub reconoce el token de API en {$a->url}, pero su rol no permite llamar a servicios: asigne al token el rol de operador.';
$string['check_api_notconfigured'] = 'No se ha establecido la URL de la API del hub o el token de API: los plugins no pueden llamar a servicios a través del hub.';
$string['check_api_notfound'] = 'Nada en {$a->url} responde como la API del hub (HTTP {$a->status}): compruebe la URL de la API del hub.';
$string['check_api_ok'] = 'El hub en {$a->url} acepta el token de API para las llamadas a servicios.';
$string['check_api_title'] = 'Llamadas a servicios';
$string['check_api_unauthorised'] = 'El hub en {$a->url} ha rechazado el token de API: {$a->message}';
$string['check_badsecret'] = 'El secreto de firma no es un secreto emitido por el hub: empieza por whsec_ seguido de texto en base64.';
$string['check_ingest_disabled'] = 'El hub conoce este sitio, pero rechaza sus eventos: {$a->message}';
$string['check_ingest_notfound'] = 'Nada en {$a->url} responde como la ingesta del hub (HTTP 404): compruebe la URL de ingesta del hub.';
$string['check_ingest_ok'] = 'El hub en {$a->url} acepta los eventos firmados por este sitio.';
$string['check_ingest_title'] = 'Eventos';
$string['check_ingest_unauthorised'] = 'El hub en {$a->url} ha rechazado la firma de este sitio: {$a->message}. Compruebe el id de origen y el secreto de firma.';
$string['check_missing'] = 'Aún sin establecer: {$a}.';
$string['check_unexpected'] = 'El hub en {$a->url} ha respondido HTTP {$a->status}: {$a->message}';
$string['check_unreachable'] = 'No se puede conectar con el hub en {$a->url}: {$a->message}';
$string['circuit_open'] = 'El circuito del servicio {$a} está abierto: el hub no le envía nada hasta que se recupere.';
$string['confirmdiscard'] = '¿Descartar definitivamente estos eventos? Nunca llegarán al hub.';
$string['discard'] = 'Descartar';
$string['discardall'] = 'Descartar todos los eventos apartados';
$string['discarded'] = '{$a} eventos apartados descartados.';
$string['enabled'] = 'Reenviar eventos';
$string['enabled_desc'] = 'Registrar cada evento del sitio y enviarlo al hub. Los eventos solo se registran mientras esta opción está activada y están establecidos la URL de ingesta, el id de origen y el secreto de firma.';
$string['event_webhook_received'] = 'Mensaje recibido del hub';
$string['eventname'] = 'Evento';
$string['exclude'] = 'Eventos que nunca se reenvían';
$string['exclude_desc'] = 'Nombres de eventos, uno por línea; <code>*</code> coincide con cualquier cosa. Por ejemplo <code>\core\event\course_viewed</code> o <code>\mod_forum\event\*</code>. Las exclusiones prevalecen sobre las inclusiones.';
$string['facade_not_configured'] = 'No se ha establecido la URL de la API del hub o el token de API de local_mih.';
$string['facade_refused'] = 'El hub ha rechazado la llamada (HTTP {$a->status}): {$a->message}';
$string['facade_unreachable'] = 'No se puede conectar con el hub en {$a->url}: {$a->error}';
$string['heading_events'] = 'Eventos hacia el hub';
$string['heading_events_desc'] = 'Cree un origen en el hub para este sitio y pegue aquí su id y su secreto de firma. Lo que espera para enviarse y lo que el hub ha rechazado se muestra en la <a href="{$a}">página de la bandeja de salida</a>, que también prueba la conexión.';
$string['heading_facade'] = 'Llamadas a servicios';
$string['heading_facade_desc'] = 'Otros plugins llaman a los servicios registrados en el hub a través de <code>\local_mih\hub</code>.';
$string['heading_inbound'] = 'Mensajes del hub';
$string['heading_inbound_desc'] = 'Los servicios externos envían mensajes al hub (por webhook o AMQP). Cada minuto este sitio recoge los de su origen y genera para cada uno el evento <code>\local_mih\event\webhook_received</code>, que otros plugins observan. Requiere la URL de la API del hub, el token de API y el id de origen indicados arriba.';
$string['inbound'] = 'Recibir mensajes entrantes';
$string['inbound_desc'] = 'Recoger los mensajes que el hub guarda para este sitio y generar un evento por mensaje, en orden. Mientras esta opción está desactivada, los mensajes esperan en el hub durante el tiempo que su retención los conserve.';
$string['include'] = 'Eventos reenviados';
$string['include_desc'] = 'Nombres de eventos, uno por línea; <code>*</code> coincide con cualquier cosa. <code>*</code> por sí solo reenvía todos los eventos.';
$string['ingesturl'] = 'URL de ingesta del hub';
$string['ingesturl_desc'] = 'La dirección de la ingesta del hub, por ejemplo <code>https://hub.example.org:8081</code> (se añade <code>/v1/events</code> si falta).';
$string['invalidaction'] = 'Acción desconocida: {$a}';
$string['invalidsecret'] = 'Esto no es un secreto de firma del hub: empieza por whsec_ seguido de texto en base64, tal como lo muestra el hub para el origen.';
$string['lasterror'] = 'Último error';
$string['mih:manage'] = 'Enviar, reintentar y descartar eventos de la bandeja de salida del hub, y probar la conexión';
$string['mih:view'] = 'Ver la bandeja de salida del hub';
$string['nextattempt'] = 'Próximo intento';
$string['noparked'] = 'El hub no ha rechazado ningún evento.';
$string['notforwarding'] = 'No se están registrando eventos: el reenvío está desactivado o sin configurar (<a href="{$a}">configuración</a>).';
$string['oldest'] = 'Evento en espera más antiguo';
$string['outbox'] = 'Bandeja de salida del hub';
$string['parked'] = 'Apartados (rechazados por el hub)';
$string['parkedevents'] = 'Eventos rechazados por el hub';
$string['pending'] = 'En espera de envío';
$string['pluginname'] = 'Hub de integración de Moodle (mih)';
$string['privacy:metadata:hub'] = 'Cada evento del sitio se envía al hub de integración mih, que lo transmite a los sistemas externos que conecten sus administradores.';
$string['privacy:metadata:hub:courseid'] = 'El curso en el que ocurrió el evento.';
$string['privacy:metadata:hub:eventname'] = 'Qué ocurrió.';
$string['privacy:metadata:hub:ip'] = 'La dirección IP de la que procede el evento.';
$string['privacy:metadata:hub:other'] = 'Detalles del evento, que pueden incluir datos personales.';
$string['privacy:metadata:hub:realuserid'] = 'El usuario real cuando alguien había iniciado sesión como otro usuario.';
$string['privacy:metadata:hub:relateduserid'] = 'El usuario al que se refiere el evento.';
$string['privacy:metadata:hub:timecreated'] = 'Cuándo ocurrió el evento.';
$string['privacy:metadata:hub:userid'] = 'El usuario que causó el evento.';
$string['privacy:metadata:outbox'] = 'Los eventos esperan aquí hasta que el hub los ha almacenado; los eventos rechazados por el hub permanecen hasta que un administrador los reintenta o los descarta.';
$string['privacy:metadata:outbox:eventname'] = 'Qué ocurrió.';
$string['privacy:metadata:outbox:lasterror'] = 'Por qué el hub aún no ha almacenado el evento.';
$string['privacy:metadata:outbox:payload'] = 'El evento completo tal como se enviará, incluidos los id de usuario, la dirección IP y sus detalles.';
$string['privacy:metadata:outbox:relateduserid'] = 'El usuario al que se refiere el evento.';
$string['privacy:metadata:outbox:timecreated'] = 'Cuándo ocurrió el evento.';
$string['privacy:metadata:outbox:userid'] = 'El usuario que causó el evento.';
$string['privacy:outboxpath'] = 'Eventos en espera del hub';
$string['reason'] = 'Motivo';
$string['retried'] = '{$a} eventos apartados devueltos a la cola.';
$string['retry'] = 'Reintentar';
$string['retryall'] = 'Reintentar todos los eventos apartados';
$string['sendnow'] = 'Enviar ahora';
$string['sent_report'] = 'Enviados {$a->sent} eventos en {$a->batches} solicitudes; apartados: {$a->parked}; retenidos: {$a->deferred}.';
$string['service_disabled'] = 'El servicio {$a} está desactivado en el hub.';
$string['service_not_found'] = 'El servicio {$a} no está registrado en el hub.';
$string['signingsecret'] = 'Secreto de firma';
$string['signingsecret_desc'] = 'El secreto de firma del origen tal como lo muestra el hub (whsec_…). Cada solicitud al hub se firma con él.';
$string['sourceid'] = 'Id de origen';
$string['sourceid_desc'] = 'El id del origen de este sitio en el hub.';
$string['stopped'] = 'Detenido: {$a}';
$string['task_pull_inbound'] = 'Recibir mensajes del hub';
$string['task_send_outbox'] = 'Enviar eventos al hub';
$string['testconnection'] = 'Probar conexión';
$string['timecreated'] = 'Ocurrido';
$string['timeout'] = 'Tiempo de espera de la solicitud';
$string['timeout_desc'] = 'Segundos que puede tardar una solicitud al hub (de 1 a 60). El envío se realiza después de entregar la página, por lo que los usuarios nunca tienen que esperarlo.';
$string['waiting'] = 'Retenidos tras un fallo';

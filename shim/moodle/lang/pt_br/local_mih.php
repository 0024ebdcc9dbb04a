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
 * Brazilian Portuguese strings of local_mih.
 *
 * @package    local_mih
 * @category   string
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$string['apitoken'] = 'Token de API do hub';
$string['apitoken_desc'] = 'Um token de API do hub com o papel de operador, usado por plugins que chamam serviços por meio do hub (<code>\local_mih\hub::request()</code>). Crie um com <code>mih token create --role operator</code>.';
$string['apiurl'] = 'URL da API do hub';
$string['apiurl_desc'] = 'O endereço da API do hub, por exemplo <code>https://hub.example.org:8084</code>.';
$string['attempts'] = 'Tentativas';
$string['batchsize'] = 'Tamanho do lote';
$string['batchsize_desc'] = 'Eventos enviados ao hub em uma única requisição (de 1 a 1000).';
$string['check_api_forbidden'] = 'O hub em {$a->url} reconhece o token de API, mas o papel dele não permite chamar serviços: atribua ao token o papel de operador.';
$string['check_api_notconfigured'] = 'A URL da API do hub ou o token de API não está definido: os plugins não podem chamar serviços por meio do hub.';
$string['check_api_notfound'] = 'Nada em {$a->url} responde como a API do hub (HTTP {$a->status}): verifique a URL da API do hub.';
$string['check_api_ok'] = 'O hub em {$a->url} aceita o token de API para chamadas a serviços.';
$string['check_api_title'] = 'Chamadas a serviços';
$string['check_api_unauthorised'] = 'O hub em {$a->url} recusou o token de API: {$a->message}';
$string['check_badsecret'] = 'O segredo de assinatura não é um segredo emitido pelo hub: ele começa com whsec_ seguido de texto em base64.';
$string['check_ingest_disabled'] = 'O hub reconhece este site, mas recusa os eventos dele: {$a->message}';
$string['check_ingest_notfound'] = 'Nada em {$a->url} responde como a ingestão do hub (HTTP 404): verifique a URL de ingestão do hub.';
$string['check_ingest_ok'] = 'O hub em {$a->url} aceita eventos assinados por este site.';
$string['check_ingest_title'] = 'Eventos';
$string['check_ingest_unauthorised'] = 'O hub em {$a->url} recusou a assinatura deste site: {$a->message}. Verifique o id da origem e o segredo de assinatura.';
$string['check_missing'] = 'Ainda não definido: {$a}.';
$string['check_unexpected'] = 'O hub em {$a->url} respondeu HTTP {$a->status}: {$a->message}';
$string['check_unreachable'] = 'Não foi possível acessar o hub em {$a->url}: {$a->message}';
$string['circuit_open'] = 'O circuito do serviço {$a} está aberto: o hub não envia nada a ele até que se recupere.';
$string['confirmdiscard'] = 'Descartar estes eventos definitivamente? Eles nunca chegarão ao hub.';
$string['discard'] = 'Descartar';
$string['discardall'] = 'Descartar todos os eventos separados';
$string['discarded'] = '{$a} eventos separados descartados.';
$string['enabled'] = 'Encaminhar eventos';
$string['enabled_desc'] = 'Registrar todos os eventos do site e enviá-los ao hub. Os eventos só são registrados enquanto esta opção estiver ativada e a URL de ingestão, o id da origem e o segredo de assinatura estiverem definidos.';
$string['event_webhook_received'] = 'Mensagem recebida do hub';
$string['eventname'] = 'Evento';
$string['exclude'] = 'Eventos nunca encaminhados';
$string['exclude_desc'] = 'Nomes de eventos, um por linha; <code>*</code> corresponde a qualquer coisa. Por exemplo, <code>\core\event\course_viewed</code> ou <code>\mod_forum\event\*</code>. As exclusões prevalecem sobre as inclusões.';
$string['facade_not_configured'] = 'A URL da API do hub ou o token de API do local_mih não está definido.';
$string['facade_refused'] = 'O hub recusou a chamada (HTTP {$a->status}): {$a->message}';
$string['facade_unreachable'] = 'Não foi possível acessar o hub em {$a->url}: {$a->error}';
$string['heading_events'] = 'Eventos para o hub';
$string['heading_events_desc'] = 'Crie uma origem no hub para este site e cole aqui o id e o segredo de assinatura dela. O que aguarda envio e o que o hub recusou aparece na <a href="{$a}">página da caixa de saída</a>, que também testa a conexão.';
$string['heading_facade'] = 'Chamadas a serviços';
$string['heading_facade_desc'] = 'Outros plugins chamam os serviços registrados no hub por meio de <code>\local_mih\hub</code>.';
$string['heading_inbound'] = 'Mensagens do hub';
$string['heading_inbound_desc'] = 'Serviços externos enviam mensagens ao hub (por webhook ou AMQP). A cada minuto este site busca as da sua origem e dispara para cada uma o evento <code>\local_mih\event\webhook_received</code>, que outros plugins observam. Requer a URL da API do hub, o token de API e o id da origem informados acima.';
$string['inbound'] = 'Receber mensagens de entrada';
$string['inbound_desc'] = 'Buscar as mensagens que o hub guarda para este site e disparar um evento por mensagem, em ordem. Enquanto esta opção estiver desativada, as mensagens aguardam no hub pelo tempo que a retenção dele as mantiver.';
$string['include'] = 'Eventos encaminhados';
$string['include_desc'] = 'Nomes de eventos, um por linha; <code>*</code> corresponde a qualquer coisa. <code>*</code> sozinho encaminha todos os eventos.';
$string['ingesturl'] = 'URL de ingestão do hub';
$string['ingesturl_desc'] = 'O endereço da ingestão do hub, por exemplo <code>https://hub.example.org:8081</code> (<code>/v1/events</code> é adicionado quando ausente).';
$string['invalidaction'] = 'Ação desconhecida: {$a}';
$string['invalidsecret'] = 'Este não é um segredo de assinatura do hub: ele começa com whsec_ seguido de texto em base64, como o hub o exibe para a origem.';
$string['lasterror'] = 'Último erro';
$string['mih:manage'] = 'Enviar, tentar novamente e descartar eventos da caixa de saída do hub, e testar a conexão';
$string['mih:view'] = 'Ver a caixa de saída do hub';
$string['nextattempt'] = 'Próxima tentativa';
$string['noparked'] = 'O hub não recusou nenhum evento.';
$string['notforwarding'] = 'Os eventos não estão sendo registrados: o encaminhamento está desativado ou não configurado (<a href="{$a}">configurações</a>).';
$string['oldest'] = 'Evento em espera mais antigo';
$string['outbox'] = 'Caixa de saída do hub';
$string['parked'] = 'Separados (recusados pelo hub)';
$string['parkedevents'] = 'Eventos recusados pelo hub';
$string['pending'] = 'Aguardando envio';
$string['pluginname'] = 'Hub de integração do Moodle (mih)';
$string['privacy:metadata:hub'] = 'Todos os eventos do site são enviados ao hub de integração mih, que os repassa aos sistemas externos conectados pelos administradores dele.';
$string['privacy:metadata:hub:courseid'] = 'O curso em que o evento ocorreu.';
$string['privacy:metadata:hub:eventname'] = 'O que aconteceu.';
$string['privacy:metadata:hub:ip'] = 'O endereço IP de onde veio o evento.';
$string['privacy:metadata:hub:other'] = 'Detalhes do evento, que podem incluir dados pessoais.';
$string['privacy:metadata:hub:realuserid'] = 'O usuário real quando alguém estava acessando como outro usuário.';
$string['privacy:metadata:hub:relateduserid'] = 'O usuário a quem o evento se refere.';
$string['privacy:metadata:hub:timecreated'] = 'Quando o evento aconteceu.';
$string['privacy:metadata:hub:userid'] = 'O usuário que causou o evento.';
$string['privacy:metadata:outbox'] = 'Os eventos aguardam aqui até que o hub os armazene; os eventos recusados pelo hub permanecem até que um administrador os reenvie ou descarte.';
$string['privacy:metadata:outbox:eventname'] = 'O que aconteceu.';
$string['privacy:metadata:outbox:lasterror'] = 'Por que o hub ainda não armazenou o evento.';
$string['privacy:metadata:outbox:payload'] = 'O evento completo como será enviado, incluindo os ids de usuário, o endereço IP e os detalhes dele.';
$string['privacy:metadata:outbox:relateduserid'] = 'O usuário a quem o evento se refere.';
$string['privacy:metadata:outbox:timecreated'] = 'Quando o evento aconteceu.';
$string['privacy:metadata:outbox:userid'] = 'O usuário que causou o evento.';
$string['privacy:outboxpath'] = 'Eventos aguardando o hub';
$string['reason'] = 'Motivo';
$string['retried'] = '{$a} eventos separados colocados de volta na fila.';
$string['retry'] = 'Tentar novamente';
$string['retryall'] = 'Tentar novamente todos os eventos separados';
$string['sendnow'] = 'Enviar agora';
$string['sent_report'] = '{$a->sent} eventos enviados em {$a->batches} requisições; separados: {$a->parked}; retidos: {$a->deferred}.';
$string['service_disabled'] = 'O serviço {$a} está desativado no hub.';
$string['service_not_found'] = 'O serviço {$a} não está registrado no hub.';
$string['signingsecret'] = 'Segredo de assinatura';
$string['signingsecret_desc'] = 'O segredo de assinatura da origem, como o hub o exibe (whsec_…). Toda requisição ao hub é assinada com ele.';
$string['sourceid'] = 'Id da origem';
$string['sourceid_desc'] = 'O id da origem deste site no hub.';
$string['stopped'] = 'Interrompido: {$a}';
$string['task_pull_inbound'] = 'Receber mensagens do hub';
$string['task_send_outbox'] = 'Enviar eventos ao hub';
$string['testconnection'] = 'Testar conexão';
$string['timecreated'] = 'Ocorrido em';
$string['timeout'] = 'Tempo limite da requisição';
$string['timeout_desc'] = 'Segundos que uma requisição ao hub pode levar (de 1 a 60). O envio ocorre depois que a página é entregue, então os usuários nunca esperam por ele.';
$string['waiting'] = 'Retidos após uma falha';

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
 * French strings of local_mih.
 *
 * @package    local_mih
 * @category   string
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$string['apitoken'] = 'Jeton API du hub';
$string['apitoken_desc'] = 'Un jeton API du hub ayant le rôle opérateur, utilisé par les plugins qui appellent des services via le hub (<code>\local_mih\hub::request()</code>). Créez-en un avec <code>mih token create --role operator</code>.';
$string['apiurl'] = 'URL de l\'API du hub';
$string['apiurl_desc'] = 'L\'adresse de l\'API du hub, par exemple <code>https://hub.example.org:8084</code>.';
$string['attempts'] = 'Tentatives';
$string['batchsize'] = 'Taille des lots';
$string['batchsize_desc'] = 'Nombre d\'événements envoyés au hub en une seule requête (de 1 à 1000).';
$string['check_api_forbidden'] = 'Le hub à {$a->url} connaît le jeton API, mais son rôle ne permet pas d\'appeler des services : attribuez au jeton le rôle opérateur.';
$string['check_api_notconfigured'] = 'L\'URL de l\'API du hub ou le jeton API n\'est pas défini : les plugins ne peuvent pas appeler de services via le hub.';
$string['check_api_notfound'] = 'Rien à {$a->url} ne répond comme l\'API du hub (HTTP {$a->status}) : vérifiez l\'URL de l\'API du hub.';
$string['check_api_ok'] = 'Le hub à {$a->url} accepte le jeton API pour les appels de services.';
$string['check_api_title'] = 'Appels de services';
$string['check_api_unauthorised'] = 'Le hub à {$a->url} a refusé le jeton API : {$a->message}';
$string['check_badsecret'] = 'Le secret de signature n\'est pas un secret émis par le hub : il commence par whsec_ suivi d\'un texte en base64.';
$string['check_ingest_disabled'] = 'Le hub connaît ce site, mais refuse ses événements : {$a->message}';
$string['check_ingest_notfound'] = 'Rien à {$a->url} ne répond comme le point d\'ingestion du hub (HTTP 404) : vérifiez l\'URL d\'ingestion du hub.';
$string['check_ingest_ok'] = 'Le hub à {$a->url} accepte les événements signés par ce site.';
$string['check_ingest_title'] = 'Événements';
$string['check_ingest_unauthorised'] = 'Le hub à {$a->url} a refusé la signature de ce site : {$a->message}. Vérifiez l\'identifiant de source et le secret de signature.';
$string['check_missing'] = 'Pas encore défini : {$a}.';
$string['check_unexpected'] = 'Le hub à {$a->url} a répondu HTTP {$a->status} : {$a->message}';
$string['check_unreachable'] = 'Impossible de joindre le hub à {$a->url} : {$a->message}';
$string['circuit_open'] = 'Le circuit du service {$a} est ouvert : le hub ne lui envoie plus rien jusqu\'à son rétablissement.';
$string['confirmdiscard'] = 'Supprimer définitivement ces événements ? Ils n\'atteindront jamais le hub.';
$string['discard'] = 'Supprimer';
$string['discardall'] = 'Supprimer tous les événements mis de côté';
$string['discarded'] = '{$a} événements mis de côté supprimés.';
$string['enabled'] = 'Transmettre les événements';
$string['enabled_desc'] = 'Enregistrer chaque événement du site et l\'envoyer au hub. Les événements ne sont enregistrés que si cette option est activée et que l\'URL d\'ingestion, l\'identifiant de source et le secret de signature sont définis.';
$string['event_webhook_received'] = 'Message reçu du hub';
$string['eventname'] = 'Événement';
$string['exclude'] = 'Événements jamais transmis';
$string['exclude_desc'] = 'Noms d\'événements, un par ligne ; <code>*</code> correspond à n\'importe quoi. Par exemple <code>\core\event\course_viewed</code> ou <code>\mod_forum\event\*</code>. Les exclusions l\'emportent sur les inclusions.';
$string['facade_not_configured'] = 'L\'URL de l\'API du hub ou le jeton API de local_mih n\'est pas défini.';
$string['facade_refused'] = 'Le hub a refusé l\'appel (HTTP {$a->status}) : {$a->message}';
$string['facade_unreachable'] = 'Impossible de joindre le hub à {$a->url} : {$a->error}';
$string['heading_events'] = 'Événements vers le hub';
$string['heading_events_desc'] = 'Créez une source dans le hub pour ce site, puis collez ici son identifiant et son secret de signature. Ce qui attend d\'être envoyé et ce que le hub a refusé figure sur la <a href="{$a}">page de la boîte d\'envoi</a>, qui permet aussi de tester la connexion.';
$string['heading_facade'] = 'Appels de services';
$string['heading_facade_desc'] = 'D\'autres plugins appellent les services enregistrés dans le hub via <code>\local_mih\hub</code>.';
$string['heading_inbound'] = 'Messages du hub';
$string['heading_inbound_desc'] = 'Les services externes envoient des messages au hub (par webhook ou AMQP). Chaque minute, ce site récupère ceux de sa source et déclenche pour chacun l\'événement <code>\local_mih\event\webhook_received</code>, que d\'autres plugins observent. Nécessite l\'URL de l\'API du hub, le jeton API et l\'identifiant de source ci-dessus.';
$string['inbound'] = 'Recevoir les messages entrants';
$string['inbound_desc'] = 'Récupérer les messages que le hub conserve pour ce site et déclencher un événement par message, dans l\'ordre. Tant que cette option est désactivée, les messages attendent dans le hub aussi longtemps que sa rétention les conserve.';
$string['include'] = 'Événements transmis';
$string['include_desc'] = 'Noms d\'événements, un par ligne ; <code>*</code> correspond à n\'importe quoi. <code>*</code> seul transmet tous les événements.';
$string['ingesturl'] = 'URL d\'ingestion du hub';
$string['ingesturl_desc'] = 'L\'adresse du point d\'ingestion du hub, par exemple <code>https://hub.example.org:8081</code> (<code>/v1/events</code> est ajouté s\'il manque).';
$string['invalidaction'] = 'Action inconnue : {$a}';
$string['invalidsecret'] = 'Ce n\'est pas un secret de signature du hub : il commence par whsec_ suivi d\'un texte en base64, tel que le hub l\'affiche pour la source.';
$string['lasterror'] = 'Dernière erreur';
$string['mih:manage'] = 'Envoyer, réessayer et supprimer les événements de la boîte d\'envoi du hub, et tester la connexion';
$string['mih:view'] = 'Voir la boîte d\'envoi du hub';
$string['nextattempt'] = 'Prochaine tentative';
$string['noparked'] = 'Le hub n\'a refusé aucun événement.';
$string['notforwarding'] = 'Les événements ne sont pas enregistrés : la transmission est désactivée ou non configurée (<a href="{$a}">réglages</a>).';
$string['oldest'] = 'Plus ancien événement en attente';
$string['outbox'] = 'Boîte d\'envoi du hub';
$string['parked'] = 'Mis de côté (refusés par le hub)';
$string['parkedevents'] = 'Événements refusés par le hub';
$string['pending'] = 'En attente d\'envoi';
$string['pluginname'] = 'Hub d\'intégration Moodle (mih)';
$string['privacy:metadata:hub'] = 'Chaque événement du site est envoyé au hub d\'intégration mih, qui le transmet aux systèmes externes connectés par ses administrateurs.';
$string['privacy:metadata:hub:courseid'] = 'Le cours dans lequel l\'événement s\'est produit.';
$string['privacy:metadata:hub:eventname'] = 'Ce qui s\'est passé.';
$string['privacy:metadata:hub:ip'] = 'L\'adresse IP d\'où provient l\'événement.';
$string['privacy:metadata:hub:other'] = 'Les détails de l\'événement, qui peuvent inclure des données personnelles.';
$string['privacy:metadata:hub:realuserid'] = 'L\'utilisateur réel lorsque quelqu\'un était connecté en tant qu\'un autre utilisateur.';
$string['privacy:metadata:hub:relateduserid'] = 'L\'utilisateur concerné par l\'événement.';
$string['privacy:metadata:hub:timecreated'] = 'Le moment où l\'événement s\'est produit.';
$string['privacy:metadata:hub:userid'] = 'L\'utilisateur à l\'origine de l\'événement.';
$string['privacy:metadata:outbox'] = 'Les événements attendent ici jusqu\'à ce que le hub les ait enregistrés ; les événements refusés par le hub y restent jusqu\'à ce qu\'un administrateur les renvoie ou les supprime.';
$string['privacy:metadata:outbox:eventname'] = 'Ce qui s\'est passé.';
$string['privacy:metadata:outbox:lasterror'] = 'La raison pour laquelle le hub n\'a pas encore enregistré l\'événement.';
$string['privacy:metadata:outbox:payload'] = 'L\'événement complet tel qu\'il sera envoyé, y compris les identifiants des utilisateurs, l\'adresse IP et ses détails.';
$string['privacy:metadata:outbox:relateduserid'] = 'L\'utilisateur concerné par l\'événement.';
$string['privacy:metadata:outbox:timecreated'] = 'Le moment où l\'événement s\'est produit.';
$string['privacy:metadata:outbox:userid'] = 'L\'utilisateur à l\'origine de l\'événement.';
$string['privacy:outboxpath'] = 'Événements en attente du hub';
$string['reason'] = 'Motif';
$string['retried'] = '{$a} événements mis de côté remis dans la file d\'attente.';
$string['retry'] = 'Réessayer';
$string['retryall'] = 'Réessayer tous les événements mis de côté';
$string['sendnow'] = 'Envoyer maintenant';
$string['sent_report'] = '{$a->sent} événements envoyés en {$a->batches} requêtes ; mis de côté : {$a->parked} ; différés : {$a->deferred}.';
$string['service_disabled'] = 'Le service {$a} est désactivé dans le hub.';
$string['service_not_found'] = 'Le service {$a} n\'est pas enregistré dans le hub.';
$string['signingsecret'] = 'Secret de signature';
$string['signingsecret_desc'] = 'Le secret de signature de la source tel que le hub l\'affiche (whsec_…). Chaque requête vers le hub est signée avec ce secret.';
$string['sourceid'] = 'Identifiant de source';
$string['sourceid_desc'] = 'L\'identifiant de la source de ce site dans le hub.';
$string['stopped'] = 'Arrêté : {$a}';
$string['task_pull_inbound'] = 'Recevoir les messages du hub';
$string['task_send_outbox'] = 'Envoyer les événements au hub';
$string['testconnection'] = 'Tester la connexion';
$string['timecreated'] = 'Survenu le';
$string['timeout'] = 'Délai d\'expiration des requêtes';
$string['timeout_desc'] = 'Durée maximale, en secondes, d\'une requête vers le hub (de 1 à 60). L\'envoi a lieu après la livraison de la page : les utilisateurs n\'ont donc jamais à l\'attendre.';
$string['waiting'] = 'Différés après un échec';

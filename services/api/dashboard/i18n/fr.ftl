# The dashboard's French messages (keys must match en.ftl).

product = mih
skip-to-content = Aller au contenu
nav-overview = Vue d'ensemble
nav-label = Sections
language = Langue
signed-in-as = Connecté en tant que { $label } ({ $role })
role-viewer = lecteur
role-operator = opérateur
role-admin = administrateur
log-out = Se déconnecter

login-title = Connexion
login-intro = Connectez-vous avec un jeton d'API de ce hub. Créez-en un avec mih token create --role viewer (ou operator, admin).
login-token = Jeton d'API
login-submit = Se connecter
login-refused = Ce jeton est inconnu, révoqué ou expiré.
login-expired = Votre session a pris fin ; reconnectez-vous.
login-csrf = Le formulaire était trop ancien ou venait d'ailleurs ; veuillez réessayer.

overview-title = Vue d'ensemble
window = Période
window-1h = Dernière heure
window-24h = Dernières 24 heures
window-7d = 7 derniers jours
updated-at = Mis à jour :
live-note = Les chiffres se rafraîchissent toutes les 10 secondes.

card-success-rate = Taux de réussite
card-throughput = Débit
card-throughput-unit = tentatives par minute
card-latency = Latence p50 / p95 / p99
card-dead-letters = Lettres mortes
card-pending = Tâches en attente
card-open-circuits = Circuits ouverts
no-data = pas encore de données

chart-deliveries = Livraisons
chart-success-rate = Taux de réussite
chart-latency = Latence
series-delivered = Livrées
series-failed = En échec
series-success-rate = Taux de réussite
series-p50 = p50
series-p95 = p95
series-p99 = p99
chart-table-caption = Les valeurs du graphique
chart-table-time = Heure

services-title = Services
services-empty = Aucun service pour l'instant.
col-service = Service
col-circuit = Circuit
col-failures = Échecs consécutifs
col-last-error = Dernière erreur
col-pending = Tâches en attente
col-dead-letters = Lettres mortes
circuit-closed = fermé
circuit-open = ouvert
circuit-half_open = semi-ouvert
circuit-retry-at = nouvel essai à
unknown = inconnu

error-title = Une erreur s'est produite
error-forbidden = Le rôle de votre jeton ne permet pas cette action.
error-not-found = Cette page n'existe pas.
error-internal = Le hub n'a pas pu répondre : { $reason }
back-to-overview = Retour à la vue d'ensemble
language-apply = Appliquer

nav-services = Services
col-kind = Type
col-enabled = Activé
col-actions = Actions
enabled-yes = activé
enabled-no = désactivé
reset-circuit = Réinitialiser le circuit
reset-done = Le circuit de { $service } est de nouveau fermé.
test-request = Envoyer une requête de test
test-method = Méthode
test-path = Chemin
test-send = Envoyer
test-result = Requête de test vers { $service }
test-status = Statut
test-attempts = Tentatives
test-duration = Durée (ms)
test-error = Erreur
test-body = Corps de la réponse
test-none = pas de réponse
viewer-note = Le rôle de votre jeton permet de consulter sans rien modifier ; un opérateur peut réinitialiser les circuits et envoyer des requêtes de test.

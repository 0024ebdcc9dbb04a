//! Core Moodle events an administrator most often routes, offered by the rule editor's event
//! picker next to the names the hub has actually seen (a new hub has seen none).

pub const COMMON_EVENTS: &[&str] = &[
    "\\core\\event\\user_created",
    "\\core\\event\\user_updated",
    "\\core\\event\\user_deleted",
    "\\core\\event\\user_loggedin",
    "\\core\\event\\user_loggedout",
    "\\core\\event\\user_login_failed",
    "\\core\\event\\user_password_updated",
    "\\core\\event\\user_enrolment_created",
    "\\core\\event\\user_enrolment_updated",
    "\\core\\event\\user_enrolment_deleted",
    "\\core\\event\\role_assigned",
    "\\core\\event\\role_unassigned",
    "\\core\\event\\course_created",
    "\\core\\event\\course_updated",
    "\\core\\event\\course_deleted",
    "\\core\\event\\course_viewed",
    "\\core\\event\\course_completed",
    "\\core\\event\\course_module_created",
    "\\core\\event\\course_module_updated",
    "\\core\\event\\course_module_deleted",
    "\\core\\event\\course_module_completion_updated",
    "\\core\\event\\course_category_created",
    "\\core\\event\\user_graded",
    "\\core\\event\\grade_item_updated",
    "\\core\\event\\group_created",
    "\\core\\event\\group_member_added",
    "\\core\\event\\group_member_removed",
    "\\core\\event\\cohort_member_added",
    "\\core\\event\\cohort_member_removed",
    "\\core\\event\\badge_awarded",
    "\\core\\event\\message_sent",
    "\\core\\event\\calendar_event_created",
    "\\mod_assign\\event\\assessable_submitted",
    "\\mod_assign\\event\\submission_graded",
    "\\mod_quiz\\event\\attempt_submitted",
    "\\mod_forum\\event\\discussion_created",
    "\\mod_forum\\event\\post_created",
    "\\mod_feedback\\event\\response_submitted",
    "\\core\\event\\*",
    "*",
];

#[cfg(test)]
mod tests {
    use super::*;
    use mih_shared::moodle::EventPattern;

    #[test]
    fn every_suggestion_is_a_pattern_a_rule_accepts() {
        for name in COMMON_EVENTS {
            assert!(EventPattern::parse(name).is_ok(), "{name}");
        }
    }
}

-- Runbook 003, "Fase 4: Limpieza": rename, never drop. The legacy tables
-- stay readable under a dated name for the 30-day grace period; dropping
-- them is a later plan.
ALTER TABLE legacy_questionnaires RENAME TO legacy_questionnaires_deprecated_20260101;
ALTER TABLE legacy_followups RENAME TO legacy_followups_deprecated_20260101;

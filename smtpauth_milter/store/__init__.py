"""The store: typed models, the engine with migrations run in code, editing,
import/export and the audit trail."""

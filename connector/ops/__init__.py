"""Operations: metrics, health, and the runtime facts exported about the process."""

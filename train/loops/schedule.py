"""Learning-rate schedule of BERT fine-tuning: linear warm-up, linear decay."""
import tensorflow as tf
import tf_keras


class WarmupLinearDecay(tf_keras.optimizers.schedules.LearningRateSchedule):
  """Rises linearly from 0 to `peak` over `warmup_steps`, then falls to 0."""

  def __init__(self, peak: float, total_steps: int, warmup_steps: int):
    super().__init__()
    if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
      raise ValueError("need 0 <= warmup_steps <= total_steps and total_steps > 0")
    self.peak = peak
    self.total_steps = total_steps
    self.warmup_steps = warmup_steps

  def __call__(self, step):
    step = tf.cast(step, tf.float32) + 1.0  # the rate for the step being taken
    warmup = step / max(self.warmup_steps, 1)
    decay = (self.total_steps - step + 1.0) / max(
        self.total_steps - self.warmup_steps, 1)
    rate = tf.where(step <= self.warmup_steps, warmup, decay)
    return self.peak * tf.clip_by_value(rate, 0.0, 1.0)

  def get_config(self):
    return {"peak": self.peak, "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps}

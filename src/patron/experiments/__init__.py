"""Experiments: control groups and A/B arms of automations and campaigns, and the lift each arm
brought against its control group (conversion, revenue, orders, coupon redemption,
unsubscribes; intervals and significance; incremental revenue and ROI)."""

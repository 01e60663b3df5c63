//! The `Store` implementation of a backend: each method forwards to the function of the area that holds its SQL.

/// Implements `Store` for `$store` with the modules the area macros expanded
/// (`async_trait` cannot see into a macro invoked in its impl block, so the methods
/// live in the areas and this impl only forwards).
macro_rules! store_impl {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl Store for $store {
            async fn put_app_secret(
                &self,
                name: &str,
                key_id: &str,
                sealed: &str,
                version: u64,
                environments: &[String],
                by: &str,
                now: deploy_core::Timestamp,
            ) -> Result<Option<crate::app_secrets::AppSecretRecord>, StoreError> {
                app_secrets_sql::put_app_secret(
                    self,
                    name,
                    key_id,
                    sealed,
                    version,
                    environments,
                    by,
                    now,
                )
                .await
            }

            async fn put_notification_subscription(
                &self,
                subscription: &crate::NotificationSubscription,
                max_live: u32,
            ) -> Result<bool, StoreError> {
                notifications_sql::put_subscription(self, subscription, max_live).await
            }

            async fn get_notification_subscription(
                &self,
                id: deploy_core::SubscriptionId,
            ) -> Result<Option<crate::NotificationSubscription>, StoreError> {
                notifications_sql::get_subscription(self, id).await
            }

            async fn list_notification_subscriptions(
                &self,
                environment: Option<deploy_core::EnvironmentId>,
            ) -> Result<Vec<crate::NotificationSubscription>, StoreError> {
                notifications_sql::list_subscriptions(self, environment).await
            }

            async fn remove_notification_subscription(
                &self,
                id: deploy_core::SubscriptionId,
                now: deploy_core::Timestamp,
            ) -> Result<bool, StoreError> {
                notifications_sql::remove_subscription(self, id, now).await
            }

            async fn replace_notification_key(
                &self,
                id: deploy_core::SubscriptionId,
                old_sealed: Option<String>,
                key_id: &str,
                sealed: &str,
            ) -> Result<bool, StoreError> {
                notifications_sql::replace_key(self, id, old_sealed, key_id, sealed).await
            }

            async fn release_notification_leases(&self, owner: &str) -> Result<u64, StoreError> {
                notifications_sql::release_leases(self, owner).await
            }

            async fn prune_notification_deliveries(
                &self,
                before: deploy_core::Timestamp,
            ) -> Result<u64, StoreError> {
                notifications_sql::prune_deliveries(self, before).await
            }

            async fn pending_notification_deliveries(&self) -> Result<u64, StoreError> {
                notifications_sql::pending_count(self).await
            }

            async fn claim_notification_deliveries(
                &self,
                owner: &str,
                now: deploy_core::Timestamp,
                lease: std::time::Duration,
                limit: u32,
                per_subscription: u32,
            ) -> Result<Vec<crate::NotificationDelivery>, StoreError> {
                notifications_sql::claim_deliveries(
                    self,
                    owner,
                    now,
                    lease,
                    limit,
                    per_subscription,
                )
                .await
            }

            async fn record_notification_attempt(
                &self,
                owner: &str,
                outcome: &crate::AttemptOutcome,
            ) -> Result<bool, StoreError> {
                notifications_sql::record_attempt(self, owner, outcome).await
            }

            async fn list_notification_deliveries(
                &self,
                filter: &crate::DeliveryFilter,
                limit: u32,
            ) -> Result<Vec<crate::NotificationDelivery>, StoreError> {
                notifications_sql::list_deliveries(self, filter, limit).await
            }

            async fn get_notification_delivery(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<crate::NotificationDelivery>, StoreError> {
                notifications_sql::get_delivery(self, id).await
            }

            async fn notification_attempts(
                &self,
                id: uuid::Uuid,
            ) -> Result<Vec<crate::NotificationAttempt>, StoreError> {
                notifications_sql::attempts(self, id).await
            }

            async fn get_app_secret(
                &self,
                name: &str,
            ) -> Result<Option<crate::app_secrets::AppSecretRecord>, StoreError> {
                app_secrets_sql::get_app_secret(self, name).await
            }

            async fn list_app_secrets(
                &self,
            ) -> Result<Vec<crate::app_secrets::AppSecretRecord>, StoreError> {
                app_secrets_sql::list_app_secrets(self).await
            }

            async fn delete_app_secret(&self, name: &str) -> Result<bool, StoreError> {
                app_secrets_sql::delete_app_secret(self, name).await
            }

            async fn secret_key_checks(&self) -> Result<Vec<(String, String)>, StoreError> {
                app_secrets_sql::secret_key_checks(self).await
            }

            async fn put_secret_key_check(
                &self,
                key_id: &str,
                sealed: &str,
                now: deploy_core::Timestamp,
            ) -> Result<bool, StoreError> {
                app_secrets_sql::put_secret_key_check(self, key_id, sealed, now).await
            }

            async fn reseal_app_secret(
                &self,
                name: &str,
                version: u64,
                key_id: &str,
                sealed: &str,
            ) -> Result<bool, StoreError> {
                app_secrets_sql::reseal_app_secret(self, name, version, key_id, sealed).await
            }

            async fn put_deliveries(
                &self,
                deliveries: &[crate::relay::DeliveryRecord],
            ) -> Result<(), StoreError> {
                relay_sql::put_deliveries(self, deliveries).await
            }

            async fn finish_deliveries(
                &self,
                ends: &[crate::relay::DeliveryEnd],
            ) -> Result<Vec<bool>, StoreError> {
                relay_sql::finish_deliveries(self, ends).await
            }

            async fn get_delivery(
                &self,
                task: deploy_core::TaskId,
                attempt: u32,
            ) -> Result<Option<crate::relay::DeliveryRecord>, StoreError> {
                relay_sql::get_delivery(self, task, attempt).await
            }

            async fn queued_deliveries(
                &self,
                agent: deploy_core::AgentId,
            ) -> Result<Vec<crate::relay::DeliveryRecord>, StoreError> {
                relay_sql::queued_deliveries(self, agent).await
            }

            async fn append_relay_lines(
                &self,
                task: deploy_core::TaskId,
                attempt: u32,
                agent: deploy_core::AgentId,
                first_seq: u64,
                lines: &[crate::relay::RelayLine],
            ) -> Result<Option<u64>, StoreError> {
                relay_sql::append_relay_lines(self, task, attempt, agent, first_seq, lines).await
            }

            async fn relay_lines(
                &self,
                task: deploy_core::TaskId,
                attempt: u32,
                from_seq: u64,
            ) -> Result<Vec<crate::relay::RelayLine>, StoreError> {
                relay_sql::relay_lines(self, task, attempt, from_seq).await
            }

            async fn record_agent_polls(
                &self,
                polls: &[crate::relay::AgentPoll],
            ) -> Result<(), StoreError> {
                relay_sql::record_agent_polls(self, polls).await
            }

            async fn agent_polls(&self) -> Result<Vec<crate::relay::AgentPoll>, StoreError> {
                relay_sql::agent_polls(self).await
            }

            async fn prune_deliveries(
                &self,
                finished_before: deploy_core::Timestamp,
                queued_before: deploy_core::Timestamp,
            ) -> Result<u64, StoreError> {
                relay_sql::prune_deliveries(self, finished_before, queued_before).await
            }

            async fn announce(&self, message: &str) -> Result<(), StoreError> {
                self.bus_announce(message).await
            }

            fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
                self.bus_subscribe()
            }

            fn shared(&self) -> bool {
                Self::SHARED
            }

            async fn put_environment(
                &self,
                environment: &deploy_core::Environment,
            ) -> Result<(), StoreError> {
                catalog_sql::put_environment(self, environment).await
            }

            async fn get_environment(
                &self,
                id: deploy_core::EnvironmentId,
            ) -> Result<deploy_core::Environment, StoreError> {
                catalog_sql::get_environment(self, id).await
            }

            async fn find_environment_by_name(
                &self,
                name: &str,
            ) -> Result<Option<deploy_core::Environment>, StoreError> {
                catalog_sql::find_environment_by_name(self, name).await
            }

            async fn update_environment(
                &self,
                environment: &deploy_core::Environment,
                expected_version: u64,
            ) -> Result<deploy_core::Environment, StoreError> {
                catalog_sql::update_environment(self, environment, expected_version).await
            }

            async fn list_environments(
                &self,
                before: Option<deploy_core::EnvironmentId>,
                limit: u32,
            ) -> Result<Vec<deploy_core::Environment>, StoreError> {
                catalog_sql::list_environments(self, before, limit).await
            }

            async fn put_target(&self, target: &deploy_core::Target) -> Result<(), StoreError> {
                catalog_sql::put_target(self, target).await
            }

            async fn list_targets(
                &self,
                environment: deploy_core::EnvironmentId,
            ) -> Result<Vec<deploy_core::Target>, StoreError> {
                catalog_sql::list_targets(self, environment).await
            }

            async fn update_target(
                &self,
                target: &deploy_core::Target,
                expected_version: u64,
            ) -> Result<deploy_core::Target, StoreError> {
                catalog_sql::update_target(self, target, expected_version).await
            }

            async fn delete_target(
                &self,
                id: deploy_core::TargetId,
                now: deploy_core::Timestamp,
            ) -> Result<(), StoreError> {
                catalog_sql::delete_target(self, id, now).await
            }

            async fn delete_environment(
                &self,
                id: deploy_core::EnvironmentId,
                now: deploy_core::Timestamp,
            ) -> Result<(), StoreError> {
                catalog_sql::delete_environment(self, id, now).await
            }

            async fn archive_release(
                &self,
                id: deploy_core::ReleaseId,
                now: deploy_core::Timestamp,
            ) -> Result<deploy_core::Release, StoreError> {
                catalog_sql::archive_release(self, id, now).await
            }

            async fn put_release(&self, release: &deploy_core::Release) -> Result<(), StoreError> {
                catalog_sql::put_release(self, release).await
            }

            async fn list_releases(
                &self,
                before: Option<deploy_core::ReleaseId>,
                limit: u32,
            ) -> Result<Vec<deploy_core::Release>, StoreError> {
                catalog_sql::list_releases(self, before, limit).await
            }

            async fn find_release_by_name(
                &self,
                name: &str,
            ) -> Result<Option<deploy_core::Release>, StoreError> {
                catalog_sql::find_release_by_name(self, name).await
            }

            async fn get_release(
                &self,
                id: deploy_core::ReleaseId,
            ) -> Result<deploy_core::Release, StoreError> {
                catalog_sql::get_release(self, id).await
            }

            async fn put_promotion(&self, p: &deploy_core::Promotion) -> Result<(), StoreError> {
                catalog_sql::put_promotion(self, p).await
            }

            async fn put_promotion_awaiting_approval(
                &self,
                p: &deploy_core::Promotion,
            ) -> Result<(), StoreError> {
                catalog_sql::put_promotion_awaiting_approval(self, p).await
            }

            async fn save_promotion(
                &self,
                p: &deploy_core::Promotion,
            ) -> Result<deploy_core::Promotion, StoreError> {
                catalog_sql::save_promotion(self, p).await
            }

            async fn list_promotions(
                &self,
                environment: Option<deploy_core::EnvironmentId>,
                status: Option<deploy_core::PromotionStatus>,
                before: Option<deploy_core::PromotionId>,
                limit: u32,
            ) -> Result<Vec<deploy_core::Promotion>, StoreError> {
                catalog_sql::list_promotions(self, environment, status, before, limit).await
            }

            async fn release_completed_in(
                &self,
                release: deploy_core::ReleaseId,
                environment: deploy_core::EnvironmentId,
            ) -> Result<bool, StoreError> {
                catalog_sql::release_completed_in(self, release, environment).await
            }

            async fn environments_where_release_completed(
                &self,
                release: deploy_core::ReleaseId,
            ) -> Result<Vec<deploy_core::EnvironmentId>, StoreError> {
                catalog_sql::environments_where_release_completed(self, release).await
            }

            async fn append_audit(&self, r: &crate::model::AuditRecord) -> Result<u64, StoreError> {
                tokens_sql::append_audit(self, r).await
            }

            async fn list_audit(
                &self,
                filter: &crate::model::AuditFilter,
                limit: u32,
            ) -> Result<Vec<crate::model::AuditRecord>, StoreError> {
                tokens_sql::list_audit(self, filter, limit).await
            }

            async fn get_promotion(
                &self,
                id: deploy_core::PromotionId,
            ) -> Result<deploy_core::Promotion, StoreError> {
                catalog_sql::get_promotion(self, id).await
            }

            async fn create_job_traced(
                &self,
                job: &deploy_core::DeploymentJob,
                traceparent: Option<deploy_core::Traceparent>,
            ) -> Result<Created<deploy_core::DeploymentJob>, StoreError> {
                jobs_sql::create_job(self, job, traceparent.as_ref()).await
            }

            async fn job_trace_context(
                &self,
                job: deploy_core::JobId,
            ) -> Result<Option<deploy_core::Traceparent>, StoreError> {
                trace_context_sql::job_trace_context(self, job).await
            }

            async fn get_job(
                &self,
                id: deploy_core::JobId,
            ) -> Result<deploy_core::DeploymentJob, StoreError> {
                jobs_sql::get_job(self, id).await
            }

            async fn list_jobs(
                &self,
                environment: Option<deploy_core::EnvironmentId>,
                status: Option<deploy_core::JobStatus>,
                before: Option<deploy_core::JobId>,
                limit: u32,
            ) -> Result<Vec<deploy_core::DeploymentJob>, StoreError> {
                jobs_sql::list_jobs(self, environment, status, before, limit).await
            }

            async fn list_job_summaries(
                &self,
                query: &crate::model::JobQuery,
            ) -> Result<Vec<crate::model::JobSummary>, StoreError> {
                jobs_sql::list_job_summaries(self, query).await
            }

            async fn get_job_summary(
                &self,
                id: deploy_core::JobId,
            ) -> Result<crate::model::JobSummary, StoreError> {
                jobs_sql::get_job_summary(self, id).await
            }

            async fn recent_target_tasks(
                &self,
                environment: deploy_core::EnvironmentId,
                jobs: u32,
            ) -> Result<Vec<crate::model::TargetTaskState>, StoreError> {
                jobs_sql::recent_target_tasks(self, environment, jobs).await
            }

            async fn count_jobs_by_status(
                &self,
            ) -> Result<Vec<(deploy_core::JobStatus, u64)>, StoreError> {
                jobs_sql::count_jobs_by_status(self).await
            }

            async fn ping(&self) -> Result<(), StoreError> {
                common_sql::ping(self).await
            }

            async fn get_task(
                &self,
                id: deploy_core::TaskId,
            ) -> Result<deploy_core::DeploymentTask, StoreError> {
                tasks_sql::get_task(self, id).await
            }

            async fn apply_job_event(
                &self,
                id: deploy_core::JobId,
                expected_version: u64,
                event: deploy_core::JobEvent,
                now: deploy_core::Timestamp,
                cause: &str,
            ) -> Result<deploy_core::DeploymentJob, StoreError> {
                jobs_sql::apply_job_event(self, id, expected_version, event, now, cause).await
            }

            async fn start_rollback_traced(
                &self,
                id: deploy_core::JobId,
                expected_version: u64,
                rollback: &deploy_core::DeploymentJob,
                now: deploy_core::Timestamp,
                cause: &str,
                traceparent: Option<deploy_core::Traceparent>,
            ) -> Result<(deploy_core::DeploymentJob, deploy_core::DeploymentJob), StoreError> {
                jobs_sql::start_rollback(
                    self,
                    id,
                    expected_version,
                    rollback,
                    now,
                    cause,
                    traceparent.as_ref(),
                )
                .await
            }

            async fn settle_rollback_job(
                &self,
                id: deploy_core::JobId,
                expected_version: u64,
                event: deploy_core::JobEvent,
                now: deploy_core::Timestamp,
                cause: &str,
                original_cause: &str,
            ) -> Result<
                (
                    deploy_core::DeploymentJob,
                    Option<deploy_core::DeploymentJob>,
                ),
                StoreError,
            > {
                jobs_sql::settle_rollback_job(
                    self,
                    id,
                    expected_version,
                    event,
                    now,
                    cause,
                    original_cause,
                )
                .await
            }

            async fn wait_for_new_jobs(&self, within: std::time::Duration) {
                self.wait_announced(within).await;
            }

            async fn apply_task_event(
                &self,
                id: deploy_core::TaskId,
                expected_version: u64,
                event: deploy_core::TaskEvent,
                now: deploy_core::Timestamp,
                cause: &str,
            ) -> Result<deploy_core::DeploymentTask, StoreError> {
                tasks_sql::apply_task_event(self, id, expected_version, event, now, cause).await
            }

            async fn finish_attempt(
                &self,
                id: deploy_core::TaskId,
                expected_version: u64,
                event: deploy_core::TaskEvent,
                now: deploy_core::Timestamp,
                cause: &str,
                record: &crate::model::AttemptRecord,
            ) -> Result<deploy_core::DeploymentTask, StoreError> {
                tasks_sql::finish_attempt(self, id, expected_version, event, now, cause, record)
                    .await
            }

            async fn save_task(
                &self,
                task: &deploy_core::DeploymentTask,
                now: deploy_core::Timestamp,
            ) -> Result<deploy_core::DeploymentTask, StoreError> {
                tasks_sql::save_task(self, task, now).await
            }

            async fn job_events(
                &self,
                job: deploy_core::JobId,
                after_seq: u64,
                limit: u32,
            ) -> Result<Vec<JobEventRecord>, StoreError> {
                jobs_sql::job_events(self, job, after_seq, limit).await
            }

            async fn last_job_event_seq(&self, job: deploy_core::JobId) -> Result<u64, StoreError> {
                jobs_sql::last_job_event_seq(self, job).await
            }

            async fn append_log(
                &self,
                task: deploy_core::TaskId,
                at: deploy_core::Timestamp,
                content: &str,
            ) -> Result<u64, StoreError> {
                logs_sql::append_log(self, task, at, content).await
            }

            async fn read_log(
                &self,
                task: deploy_core::TaskId,
                after_seq: u64,
                limit: u32,
            ) -> Result<Vec<LogChunk>, StoreError> {
                logs_sql::read_log(self, task, after_seq, limit).await
            }

            async fn read_log_tail(
                &self,
                task: deploy_core::TaskId,
                before_seq: Option<u64>,
                limit: u32,
            ) -> Result<Vec<LogChunk>, StoreError> {
                logs_sql::read_log_tail(self, task, before_seq, limit).await
            }

            async fn previous_successful_job(
                &self,
                environment: deploy_core::EnvironmentId,
                release: deploy_core::ReleaseId,
            ) -> Result<Option<deploy_core::DeploymentJob>, StoreError> {
                jobs_sql::previous_successful_job(self, environment, release).await
            }

            async fn last_known_good(
                &self,
                environment: deploy_core::EnvironmentId,
            ) -> Result<Vec<LastKnownGood>, StoreError> {
                jobs_sql::last_known_good(self, environment).await
            }

            async fn claim_jobs(
                &self,
                owner: &str,
                now: deploy_core::Timestamp,
                lease: std::time::Duration,
                limit: u32,
            ) -> Result<Vec<deploy_core::JobId>, StoreError> {
                leases_sql::claim_jobs(self, owner, now, lease, limit).await
            }

            async fn last_in_line(
                &self,
                environment: deploy_core::EnvironmentId,
            ) -> Result<Option<deploy_core::JobId>, StoreError> {
                leases_sql::last_in_line(self, environment).await
            }

            async fn dequeue_jobs(
                &self,
                now: deploy_core::Timestamp,
            ) -> Result<Vec<deploy_core::JobId>, StoreError> {
                leases_sql::dequeue_jobs(self, now).await
            }

            async fn renew_lease(
                &self,
                job: deploy_core::JobId,
                owner: &str,
                now: deploy_core::Timestamp,
                lease: std::time::Duration,
            ) -> Result<deploy_core::Timestamp, StoreError> {
                leases_sql::renew_lease(self, job, owner, now, lease).await
            }

            async fn release_lease(
                &self,
                job: deploy_core::JobId,
                owner: &str,
            ) -> Result<(), StoreError> {
                leases_sql::release_lease(self, job, owner).await
            }

            async fn release_leases_of(
                &self,
                owner: &str,
            ) -> Result<Vec<deploy_core::JobId>, StoreError> {
                leases_sql::release_leases_of(self, owner).await
            }

            async fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
                agents_sql::put_agent(self, agent).await
            }

            async fn get_agent(&self, id: deploy_core::AgentId) -> Result<AgentRecord, StoreError> {
                agents_sql::get_agent(self, id).await
            }

            async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
                agents_sql::list_agents(self).await
            }

            async fn find_agent_by_credential(
                &self,
                hash: &deploy_core::Digest,
            ) -> Result<Option<AgentRecord>, StoreError> {
                agents_sql::find_agent_by_credential(self, hash).await
            }

            async fn find_agent_by_bootstrap_token(
                &self,
                token: uuid::Uuid,
            ) -> Result<Option<AgentRecord>, StoreError> {
                agents_sql::find_agent_by_bootstrap_token(self, token).await
            }

            async fn set_agent_credential(
                &self,
                id: deploy_core::AgentId,
                hash: &deploy_core::Digest,
            ) -> Result<(), StoreError> {
                agents_sql::set_agent_credential(self, id, hash).await
            }

            async fn revoke_agent(
                &self,
                id: deploy_core::AgentId,
                now: deploy_core::Timestamp,
            ) -> Result<AgentRecord, StoreError> {
                agents_sql::revoke_agent(self, id, now).await
            }

            async fn set_agent_labels(
                &self,
                id: deploy_core::AgentId,
                labels: &deploy_core::Labels,
                expected_version: u64,
            ) -> Result<AgentRecord, StoreError> {
                agents_sql::set_agent_labels(self, id, labels, expected_version).await
            }

            async fn put_bootstrap_token(
                &self,
                token: &ApiTokenRecord,
                binding: &crate::model::BootstrapBinding,
            ) -> Result<(), StoreError> {
                agents_sql::put_bootstrap_token(self, token, binding).await
            }

            async fn bootstrap_binding(
                &self,
                token_id: uuid::Uuid,
            ) -> Result<Option<crate::model::BootstrapBinding>, StoreError> {
                agents_sql::bootstrap_binding(self, token_id).await
            }

            async fn list_bootstrap_bindings(
                &self,
            ) -> Result<Vec<crate::model::BootstrapBinding>, StoreError> {
                agents_sql::list_bootstrap_bindings(self).await
            }

            async fn touch_agent(
                &self,
                id: deploy_core::AgentId,
                now: deploy_core::Timestamp,
            ) -> Result<(), StoreError> {
                agents_sql::touch_agent(self, id, now).await
            }

            async fn spend_bootstrap_token(
                &self,
                hash: &deploy_core::Digest,
                now: deploy_core::Timestamp,
            ) -> Result<Option<ApiTokenRecord>, StoreError> {
                agents_sql::spend_bootstrap_token(self, hash, now).await
            }

            async fn unspend_bootstrap_token(
                &self,
                id: uuid::Uuid,
                spent_at: deploy_core::Timestamp,
            ) -> Result<bool, StoreError> {
                agents_sql::unspend_bootstrap_token(self, id, spent_at).await
            }

            async fn put_api_token(&self, token: &ApiTokenRecord) -> Result<(), StoreError> {
                tokens_sql::put_api_token(self, token).await
            }

            async fn find_api_token(
                &self,
                hash: &deploy_core::Digest,
            ) -> Result<Option<ApiTokenRecord>, StoreError> {
                tokens_sql::find_api_token(self, hash).await
            }

            async fn list_api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
                tokens_sql::list_api_tokens(self).await
            }

            async fn revoke_api_token(
                &self,
                id: uuid::Uuid,
                now: deploy_core::Timestamp,
            ) -> Result<ApiTokenRecord, StoreError> {
                tokens_sql::revoke_api_token(self, id, now).await
            }

            async fn touch_api_token(
                &self,
                id: uuid::Uuid,
                now: deploy_core::Timestamp,
            ) -> Result<(), StoreError> {
                tokens_sql::touch_api_token(self, id, now).await
            }

            async fn put_console_session(
                &self,
                session: &crate::model::ConsoleSession,
            ) -> Result<(), StoreError> {
                tokens_sql::put_console_session(self, session).await
            }

            async fn find_console_session(
                &self,
                id_hash: &deploy_core::Digest,
                now: deploy_core::Timestamp,
            ) -> Result<Option<(crate::model::ConsoleSession, ApiTokenRecord)>, StoreError> {
                tokens_sql::find_console_session(self, id_hash, now).await
            }

            async fn delete_console_session(
                &self,
                id_hash: &deploy_core::Digest,
            ) -> Result<bool, StoreError> {
                tokens_sql::delete_console_session(self, id_hash).await
            }

            async fn prune_console_sessions(
                &self,
                now: deploy_core::Timestamp,
            ) -> Result<u64, StoreError> {
                tokens_sql::prune_console_sessions(self, now).await
            }

            async fn read_job_log(
                &self,
                job: deploy_core::JobId,
                after: u64,
                limit: u32,
            ) -> Result<Vec<(u64, LogChunk)>, StoreError> {
                logs_sql::read_job_log(self, job, after, limit).await
            }

            async fn job_status(
                &self,
                id: deploy_core::JobId,
            ) -> Result<(deploy_core::JobStatus, bool), StoreError> {
                jobs_sql::job_status(self, id).await
            }

            async fn rollback_job_of(
                &self,
                original: deploy_core::JobId,
            ) -> Result<Option<deploy_core::DeploymentJob>, StoreError> {
                jobs_sql::rollback_job_of(self, original).await
            }
        }
    };
}

pub(crate) use store_impl;

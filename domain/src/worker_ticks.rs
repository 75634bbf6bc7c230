//! The progress of the periodic worker tasks (`worker_ticks`): every run counts itself when it
//! starts and again when it has finished, across all worker processes. "N runs finished that
//! started after this moment" is then something an operator or a test can see and wait for
//! (read `started`, wait until `runs` is N more), instead of guessing from elapsed time.

use entity::worker_tick;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, EntityTrait, ExprTrait as _};

use crate::{Domain, Result};

impl Domain {
    /// Counts a run of `task` as started.
    ///
    /// # Errors
    /// Database errors.
    pub async fn worker_tick_started(&self, task: &str) -> Result<()> {
        worker_tick::Entity::insert(worker_tick::ActiveModel {
            task: Set(task.to_owned()),
            started: Set(1),
            runs: Set(0),
            last_tick: Set(None),
            finished_at: Set(None),
        })
        .on_conflict(
            OnConflict::column(worker_tick::Column::Task)
                .value(
                    worker_tick::Column::Started,
                    Expr::col((worker_tick::Entity, worker_tick::Column::Started)).add(1),
                )
                .to_owned(),
        )
        .exec_without_returning(&self.writer)
        .await?;
        Ok(())
    }

    /// Counts a run of `task` as finished; `tick` is the run's slot (see
    /// [`worker_tick::Model::last_tick`]).
    ///
    /// # Errors
    /// Database errors.
    pub async fn worker_tick_finished(&self, task: &str, tick: i64) -> Result<()> {
        worker_tick::Entity::insert(worker_tick::ActiveModel {
            task: Set(task.to_owned()),
            started: Set(1),
            runs: Set(1),
            last_tick: Set(Some(tick)),
            finished_at: Set(Some(self.clock.now())),
        })
        .on_conflict(
            OnConflict::column(worker_tick::Column::Task)
                .value(
                    worker_tick::Column::Runs,
                    Expr::col((worker_tick::Entity, worker_tick::Column::Runs)).add(1),
                )
                .update_columns([worker_tick::Column::LastTick, worker_tick::Column::FinishedAt])
                .to_owned(),
        )
        .exec_without_returning(&self.writer)
        .await?;
        Ok(())
    }
}
